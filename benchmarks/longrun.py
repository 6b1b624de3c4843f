"""Long run: does sampling many images in one process keep its memory flat?

    python -m benchmarks.longrun [--bundle DIR] [--images 200] [--steps 10] [--quick]

Two ways a device service produces images, both in one process, measured from /proc/self/status after every image:
- "calls": `sample_bundle(n=1)` called once per image (a new session, plan and arena registration each time);
- "batch": one `sample_bundle(n=IMAGES, images_per_pass=1)` call (one session, pass after pass).
For each, the RSS after every image and the peak (VmHWM) so far; the growth per image is the least-squares slope
over the images after a short warm-up. Flat means the slope is ~0 and the last peak equals the warm peak; in batch
mode the returned array keeps every finished image (uint8, H·W·C bytes each), so there the slope beyond that output
is what must be ~0.

Bundle: --bundle, else the default bundle inside the package, else a real one built for this benchmark (a small
UNet trained for a few steps on generated images and exported by `edgediff export`, cached under /tmp).
Writes benchmarks/results/longrun.json (or longrun_quick.json) and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, emit, machine_info, run_fresh, write_json
from edgediff.runtime import rss as proc_rss  # stdlib only: importing it adds nothing to the RSS it measures

WARMUP = 5
BUILD_DIR = Path(tempfile.gettempdir()) / "edgediff_longrun"


def growth(rss: list[float]) -> dict:
    """Slope (MiB per image) after the warm-up, and the total change over that span."""
    ys = np.asarray(rss[WARMUP:], dtype=np.float64)
    if len(ys) < 3:
        return {"slope_mb_per_image": None, "change_mb": None}
    slope = float(np.polyfit(np.arange(len(ys)), ys, 1)[0])
    return {"slope_mb_per_image": round(slope, 5), "change_mb": round(float(ys[-1] - ys[0]), 2)}


def run_calls(bundle: Path, images: int, steps: int, out: Path) -> dict:
    from edgediff.images import write_images
    from edgediff.runtime.sampler import sample_bundle

    rss, peak, wall = [], [], []
    for i in range(images):
        t0 = time.perf_counter()
        write_images(sample_bundle(bundle, n=1, steps=steps, seed=i).images, out, None)
        wall.append(time.perf_counter() - t0)
        rss.append(round(proc_rss.current_mb(), 2))
        peak.append(round(proc_rss.peak_mb(), 2))
    return {"rss_mb": rss, "peak_mb": peak, "s_per_image": round(float(np.median(wall)), 4), **growth(rss),
            "peak_change_after_warmup_mb": round(peak[-1] - peak[min(WARMUP, images - 1)], 2)}


def run_batch(bundle: Path, images: int, steps: int, out: Path) -> dict:
    from edgediff.images import write_images
    from edgediff.runtime.sampler import sample_bundle

    rss, peak = [], []

    def on_step(done: int, total: int) -> None:
        if done % steps == 0:  # the end of a pass = one more image finished
            rss.append(round(proc_rss.current_mb(), 2))
            peak.append(round(proc_rss.peak_mb(), 2))

    t0 = time.perf_counter()
    result = sample_bundle(bundle, n=images, steps=steps, seed=0, images_per_pass=1, on_step=on_step)
    write_images(result.images, out, None)
    wall = time.perf_counter() - t0
    assert len(rss) == images, (len(rss), images)
    # the result holds every finished image (uint8), by design: that much growth per image is the output itself
    kept = result.images[0].nbytes / 2**20
    g = growth(rss)
    beyond = None if g["slope_mb_per_image"] is None else round(g["slope_mb_per_image"] - kept, 5)
    return {"rss_mb": rss, "peak_mb": peak, "s_per_image": round(wall / images, 4), **g,
            "output_mb_per_image": round(kept, 5), "slope_beyond_output_mb_per_image": beyond,
            "peak_change_after_warmup_mb": round(peak[-1] - peak[min(WARMUP, images - 1)], 2),
            "plan": result.plan.describe()}


def measure(bundle: Path, images: int, steps: int, modes: tuple[str, ...] = ("calls", "batch")) -> dict:
    """Both modes in this process (calls first, then batch), PNGs into a temp folder."""
    out = Path(tempfile.mkdtemp(prefix="longrun_")) / "grid.png"
    start = {"rss_mb": round(proc_rss.current_mb(), 2), "peak_mb": round(proc_rss.peak_mb(), 2)}
    runs = {}
    for mode in modes:
        runs[mode] = (run_calls if mode == "calls" else run_batch)(bundle, images, steps, out)
    return {"start": start, "runs": runs}


def build_bundle() -> Path:
    """A real trained-and-exported bundle (32 px, 2×2 grid, small UNet), made once and cached."""
    bundle = BUILD_DIR / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    from PIL import Image

    images = BUILD_DIR / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(32):
        img = np.full((32, 32, 3), 255, np.uint8)
        y, x = rng.integers(0, 16, 2)
        img[y : y + 16, x : x + 16] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(images / f"{i:03d}.png")
    run = BUILD_DIR / "run"
    cli = [sys.executable, "-m", "edgediff.cli"]
    subprocess.run(cli + ["train", "--data", str(images), "--image-size", "32", "--grid", "2", "--steps", "60",
                          "--batch-size", "16", "--out", str(run), "--no-memory", "--dim", "16", "--mults", "1,2",
                          "--sample-every", "0", "--checkpoint-every", "60", "--device", "cpu"]
                   + (["--resume"] if (run / "checkpoints").exists() else []), check=True)
    subprocess.run(cli + ["export", str(run), "--out", str(bundle)], check=True)
    return bundle


def pick_bundle(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    default = Path(__file__).resolve().parent.parent / "edgediff" / "default_bundle"
    return default if (default / "manifest.json").is_file() else build_bundle()


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, run in body["runs"].items():
        xs = np.arange(1, len(run["rss_mb"]) + 1)
        ax.plot(xs, run["rss_mb"], label=f"{mode}: RSS ({run['slope_mb_per_image']} MiB/image)")
        ax.plot(xs, run["peak_mb"], "--", label=f"{mode}: peak so far")
    ax.set_xlabel("images sampled in this process")
    ax.set_ylabel("MiB")
    ax.set_title(f"long run: {body['settings']['images']} images, {body['settings']['steps']} DDIM steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--modes", default="calls,batch")
    ap.add_argument("--quick", action="store_true", help="40 images, 5 steps")
    ap.add_argument("--json", default=None, help="write the result here instead of benchmarks/results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.images, a.steps = 40, 5
    bundle = pick_bundle(a.bundle)
    if not a.child:  # measure in a fresh interpreter that never imported torch or matplotlib
        measured = run_fresh("benchmarks.longrun", ["--child", "--bundle", bundle, "--images", a.images,
                                                    "--steps", a.steps, "--modes", a.modes])
        from edgediff.bundle import read_manifest  # here: the child measures an interpreter without it

        manifest = read_manifest(bundle).to_dict()  # the checked reader, as plain data for the JSON below
        body = {
            "benchmark": "longrun",
            "settings": {"images": a.images, "steps": a.steps, "modes": a.modes.split(","), "warmup_images": WARMUP,
                         "bundle": str(bundle), "image_size": manifest["image_size"], "grid": manifest["grid"],
                         "params": manifest["params"], "calls_n_per_call": 1, "batch_images_per_pass": 1},
            "machine": machine_info(),
            "note": SHARED_CPU_NOTE + " RSS is the kernel's VmRSS/VmHWM of the measuring process (fresh, no torch).",
            **measured,
        }
        name = a.json or ("longrun_quick.json" if a.quick else "longrun.json")
        path = Path(name) if a.json else write_json(name, body)
        if a.json:
            path.write_text(json.dumps(body, indent=1))
        else:
            plot(body, RESULTS / name.replace(".json", ".png"))
        for mode, run in body["runs"].items():
            extra = (f" ({run['slope_beyond_output_mb_per_image']} beyond the {run['output_mb_per_image']} MiB "
                     "image it keeps)") if "output_mb_per_image" in run else ""
            print(f"{mode}: {a.images} images, RSS slope {run['slope_mb_per_image']} MiB/image{extra}, change "
                  f"{run['change_mb']} MiB after warm-up, peak {run['peak_mb'][-1]} MiB "
                  f"(+{run['peak_change_after_warmup_mb']} after warm-up), {run['s_per_image']} s/image")
        print(f"wrote {path}")
        return 0
    emit(measure(bundle, a.images, a.steps, tuple(a.modes.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
