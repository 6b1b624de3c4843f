"""The scale ladder: a trained 128 px cell model beside a full-image model of the same widths, data and wall time.

What each row measures, all in this run:
- quality: N images from each bundle through the device runtime as `edgediff sample BUNDLE` draws them (25 DDIM
  steps, each bundle's own guidance and recorded cascade: both bundles of the ladder redraw emoji-32's images at the
  same strength, so the two 128 px networks are compared on the same task),
  scored by `edgediff.metrics.evaluate`: FD/KID in Lite0 space and in the independent network's; seam ratios at the
  cell model's border lines and mid-cell lines for both models and for the real images (the controls);
- memory and speed: peak RSS and wall time of `edgediff sample` in a fresh process at n = 1 and n = 16;
- training cost: seconds per 1,000 steps from the wall time each run's checkpoints record (`train_seconds`), or,
  with `--training-from JSON`, from an earlier scale result whose pair trained side by side: a model retrained later
  for the same steps (a lost bundle made again) keeps its equal-compute record, since its own wall time counts other
  threads and pauses;
- the same cell network at 256 and 512 px (untrained, exported at grid 16 and 32): peak RSS of n = 1. Memory
  follows the cell, not the image; quality does not carry over, since the one-hot position names a cell of the
  grid the model was trained on (a 128 px model samples 128 px).

Top-level keys the checks read: `fd_independent_vs_full` (cell ÷ full-image FD-independent) and
`peak_vs_full_image` (cell ÷ full-image peak RSS, n = 16, 128 px).

    python -m benchmarks.scale --full BUNDLE [--patch BUNDLE] [--n 64]   # writes results/scale.json + scale.png

The full-image bundle is exported from a run trained beside the cell model's (docs/scale.md has both commands: the
two ran at once, one core each, and were stopped together).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, repo_path, save_figure, save_sheet, write_json
from benchmarks.default_sample import run as sample_cli

SEED = 0
STEPS = 25
LADDER = ((256, 16), (512, 32))  # (image size, grid): 16 px cells, as the 128 px model's


def quality(bundle: Path, n: int, cell: int, base: str | None = None) -> tuple[dict, object]:
    """FD/KID in both feature spaces and seam ratios at `cell`-px lines of n images sampled from `bundle` (through
    `base` in place of its recorded base, if given)."""
    from edgediff.bundle import read_manifest
    from edgediff.data import load_dataset
    from edgediff.metrics import evaluate, quality_fields, seam_ratios
    from edgediff.runtime.cascade import sample_as_recorded

    m = read_manifest(bundle)
    images = sample_as_recorded(bundle, n=n, steps=STEPS, seed=SEED, base=base).images
    dataset = load_dataset(m.training.get("data") or "emoji", m.image_size)
    scores = evaluate(images, dataset, m.grid)
    seams, real = seam_ratios(images, cell), seam_ratios(dataset.images, cell)
    return {**quality_fields(scores, digits=4), "seam_border": round(seams["border"], 3),
            "seam_midcell": round(seams["midcell"], 3), "seam_border_real": round(real["border"], 3),
            "seam_midcell_real": round(real["midcell"], 3), "n": n}, images


def training_cost(bundle: Path) -> dict:
    """Steps and wall time the bundle's run recorded, as seconds per 1,000 steps (None where not recorded)."""
    from edgediff.bundle import read_manifest

    t = read_manifest(bundle).training
    secs, step = t.get("train_seconds"), int(t.get("step", 0))
    return {"train_steps": step, "train_seconds": secs, "batch_size": t.get("settings", {}).get("batch_size"),
            "train_s_per_1000_steps": round(1000 * secs / step, 1) if secs and step else None}


def training_from(result: Path, patch: dict, full: dict) -> None:
    """Replace both rows' training cost with `result`'s (an earlier scale JSON) where the steps agree; a mismatch
    is a one-line error, since then the two runs are not the ones that trained side by side."""
    from edgediff.errors import EdgediffError

    prior = json.loads(result.read_text())
    for name, row in (("patch", patch), ("full", full)):
        was = prior[name]["training"]
        if was["train_steps"] != row["training"]["train_steps"]:
            raise EdgediffError(f"--training-from {result}: its {name} model trained {was['train_steps']} steps, this "
                                f"one {row['training']['train_steps']}; retrain or export the same step")
        row["training"] = {**was, "source": repo_path(result)}


def memory_speed(bundle: Path, tmp: Path, steps: int = STEPS, extra: tuple[str, ...] = (),
                 sizes: tuple[int, ...] = (1, 16)) -> dict:
    """Peak RSS and seconds per image of `edgediff sample BUNDLE *extra` (fresh processes) at each n of `sizes`."""
    out = {}
    for n in sizes:
        r = sample_cli(list(extra), tmp / f"{bundle.name}_{n}.png", bundle=[str(bundle)], n=n, steps=steps)
        out[f"n{n}"] = {"peak_mb": r["peak_mb"], "sampling_wall_s": r["sampling_wall_s"],
                        "s_per_image": round(r["sampling_wall_s"] / n, 2), "plan": r["plan"]}
    return out


def ladder_row(size: int, grid: int, widths: dict, halo: int, work: Path, tmp: Path) -> dict:
    """The same cell network, untrained, exported at (size, grid): peak RSS of one image (3 DDIM steps: the peak is
    reached from the second step on; memory does not depend on the weights)."""
    from benchmarks.peak_setup import make_data_folder, make_untrained_run

    run, bundle = work / f"ladder_run_{size}", work / f"ladder_bundle_{size}"
    make_untrained_run(run, size, grid, make_data_folder(work), halo=halo, widths=widths)
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "edgediff.cli", "export", str(run), "--out", str(bundle),
                        "--no-profile"], check=True, stdout=subprocess.DEVNULL)
    r = sample_cli([], tmp / f"ladder_{size}.png", bundle=[str(bundle)], n=1, steps=3)
    return {"image_size": size, "grid": grid, "halo": halo, "peak_mb": r["peak_mb"],
            "s_per_ddim_step": round(r["sampling_wall_s"] / 3, 2), "plan": r["plan"]}


def summarize(patch: dict, full: dict) -> dict:
    """The ratios the goals are read from: cell model ÷ full-image model, same widths, data and wall time."""
    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    return {"fd_independent_vs_full": ratio(patch["quality"]["fd_independent"], full["quality"]["fd_independent"]),
            "fd_lite0_vs_full": ratio(patch["quality"]["fd_lite0"], full["quality"]["fd_lite0"]),
            "peak_vs_full_image": ratio(patch["memory"]["n16"]["peak_mb"], full["memory"]["n16"]["peak_mb"]),
            "s_per_image_vs_full": ratio(patch["memory"]["n16"]["s_per_image"], full["memory"]["n16"]["s_per_image"]),
            "train_s_per_1000_vs_full": ratio(patch["training"]["train_s_per_1000_steps"],
                                              full["training"]["train_s_per_1000_steps"])}


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    names = ["cells", "full image"]
    rows = [body["patch"], body["full"]]
    for ax, (title, get) in zip(axes[:3], (
            ("FD-independent (lower is better)", lambda r: r["quality"]["fd_independent"]),
            ("peak RSS, 16 images (MiB)", lambda r: r["memory"]["n16"]["peak_mb"]),
            ("seconds per image", lambda r: r["memory"]["n16"]["s_per_image"]))):
        ax.bar(names, [get(r) for r in rows], color=["tab:blue", "tab:gray"])
        ax.set_title(title, fontsize=9)
    sizes = [128] + [r["image_size"] for r in body["ladder"]]
    peaks = [body["patch"]["memory"]["n1"]["peak_mb"]] + [r["peak_mb"] for r in body["ladder"]]
    axes[3].plot(sizes, peaks, "o-", color="tab:blue")
    axes[3].set_xscale("log", base=2)
    axes[3].set_xticks(sizes, [str(s) for s in sizes])
    axes[3].set_title("cell model, 1 image: peak RSS (MiB) by side (px)", fontsize=9)
    fig.suptitle(f"{body['patch']['image_size']} px: cells vs full image, same widths, data and training wall time",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def describe(bundle: Path, n: int, cell: int, tmp: Path) -> tuple[dict, object]:
    """Everything measured of one bundle: geometry, training cost, quality, memory and speed."""
    from edgediff.bundle import read_manifest

    m = read_manifest(bundle)
    q, images = quality(bundle, n, cell)
    return {"bundle": repo_path(bundle), "image_size": m.image_size, "grid": m.grid, "halo": m.halo,
            "params": m.params,
            "guidance": m.sampling.get("guidance", 1.0), "cascade": m.sampling.get("base"),
            "cell_shift": m.sampling.get("cell_shift", 0),
            "training": training_cost(bundle), "quality": q,
            "memory": memory_speed(bundle, tmp)}, images


def main(argv: list[str] | None = None) -> int:
    from edgediff.bundle import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=Path, help="the cell model's bundle (default: the shipped emoji-128)")
    ap.add_argument("--full", type=Path, help="the full-image model's bundle (grid 1); required unless --sheet-only")
    ap.add_argument("--sheet-only", action="store_true",
                    help="only redraw results/emoji128_samples.png (16 images, seed 0, as the full run draws them)")
    ap.add_argument("--n", type=int, default=64, help="images sampled from each bundle for FD/KID and seams")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edgediff_scale")
    ap.add_argument("--name", default="scale", help="result name: results/NAME.json and NAME.png")
    ap.add_argument("--training-from", type=Path,
                    help="an earlier scale JSON whose pair trained side by side: its training cost is reported")
    a = ap.parse_args(argv)
    from edgediff.shipped import shipped_bundle

    patch_bundle = a.patch or shipped_bundle("emoji-128")
    if a.sheet_only:
        from edgediff.runtime.cascade import sample_as_recorded

        images = sample_as_recorded(patch_bundle, n=16, steps=STEPS, seed=SEED).images
        save_sheet(images, RESULTS / "emoji128_samples.png")
        return 0
    if a.full is None:
        ap.error("--full BUNDLE is required (the full-image model to compare with)")
    m = read_manifest(patch_bundle)
    cell = m.image_size // m.grid
    a.workdir.mkdir(parents=True, exist_ok=True)
    patch, images = describe(patch_bundle, a.n, cell, a.workdir)
    full, _ = describe(a.full, a.n, cell, a.workdir)
    if a.training_from:
        training_from(a.training_from, patch, full)
    widths = {"dim": m.model_config.dim, "mults": m.model_config.mults, "backbone": m.backbone}
    ladder = [ladder_row(size, grid, widths, m.halo, a.workdir, a.workdir) for size, grid in LADDER]
    body = {"machine": {**machine_info(), "load_average": list(os.getloadavg())}, "note": SHARED_CPU_NOTE,
            "settings": {"n": a.n, "ddim_steps": STEPS, "seed": SEED, "seam_lines_px": cell},
            **summarize(patch, full), "patch": patch, "full": full, "ladder": ladder}
    write_json(f"{a.name}.json", body)
    save_sheet(images[:16], RESULTS / "emoji128_samples.png")
    plot(body, RESULTS / f"{a.name}.png")
    print(json.dumps({k: v for k, v in body.items() if k.endswith("_full") or k.endswith("_image")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
