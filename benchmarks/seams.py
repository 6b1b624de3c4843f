"""Do stitched images show their cell grid? Seam ratio, FD-Lite0 and KID with and without halo cells, equal steps.

Every row is a small UNet trained with the project's own `edgediff train` (same seed, widths, batch, learning rate and
steps; no memory bank, so the geometry alone differs), exported by `edgediff export`, and sampled through the device
runtime (`edgediff.runtime.sampler.sample_bundle`: onnxruntime, the shared numpy DDIM loop, the planner). Rows:

- full: the full-image model (grid 1), read at the lines a 2×2 grid would have;
- halo0: today's cells, each seeing only itself (plus the pooled global content);
- haloM: cells that also see M px of their neighbours' current x_t (edgediff.cells).

Columns: params, steps, FD and KID in Lite0 space and in the independent network's (edgediff.metrics.quality_fields), seam ratio at the cell borders and at mid-cell lines (edgediff.metrics:
step across the line ÷ steps on the lines beside it; 1.0 = invisible; the real images' values at the same lines are
in `real`), and ms per image per DDIM step in the device runtime (load average recorded: the cores are shared).
Peak RSS at 512 px grid 8 comes from the peak-memory benchmark's own run (`python -m benchmarks.peak_memory
--halos 0,4`), joined into `peak_mb_512` when that result exists.

    python -m benchmarks.seams                # ≈ 1-2 h of one shared core: background it; resumes where it stopped
    python -m benchmarks.seams --quick        # minutes: tiny models, for checking the machinery

Runs and bundles live in --workdir and are reused (training resumes), and the JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, save_figure, save_sheet, write_json

FULL = dict(steps=1000, dim=32, mults="1,2,2", batch_size=32, lr=5e-4, ema_decay=0.995, n_samples=256,
            sampler_steps=20, cases=[(32, [(1, 0), (2, 0), (2, 2), (2, 4)]), (64, [(4, 0), (4, 4)])])
QUICK = dict(steps=30, dim=16, mults="1,2", batch_size=16, lr=5e-4, ema_decay=0.9, n_samples=16, sampler_steps=5,
             cases=[(32, [(1, 0), (2, 0), (2, 4)])])
SEED = 0
JSON_NAME = "seams.json"


def row_name(grid: int, halo: int) -> str:
    return "full" if grid == 1 else f"halo{halo}"


def train_and_export(work: Path, size: int, grid: int, halo: int, s: dict) -> Path:
    """`edgediff train` (resumed if a shorter run exists) then `edgediff export`; returns the bundle folder."""
    from edgediff.bundle import MANIFEST_NAME, read_manifest
    from edgediff.checkpoint import latest_checkpoint

    run, bundle = work / f"run_{size}_g{grid}_h{halo}", work / f"bundle_{size}_g{grid}_h{halo}"
    found = latest_checkpoint(run) if run.exists() else None
    done = int(found[1]["step"]) if found else 0
    if done < s["steps"]:
        cmd = ["edgediff", "train", "--data", "emoji", "--image-size", str(size), "--grid", str(grid),
               "--halo", str(halo), "--steps", str(s["steps"]), "--batch-size", str(s["batch_size"]),
               "--lr", str(s["lr"]), "--ema-decay", str(s["ema_decay"]), "--seed", str(SEED), "--dim", str(s["dim"]),
               "--mults", s["mults"], "--no-memory", "--sample-every", "0",
               "--checkpoint-every", str(max(10, s["steps"] // 4)), "--out", str(run)] + (["--resume"] if found else [])
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    stale = not (bundle / MANIFEST_NAME).is_file() or read_manifest(bundle).training["step"] != s["steps"]
    if stale:
        subprocess.run(["edgediff", "export", str(run), "--out", str(bundle)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    return bundle


def score_bundle(bundle: Path, size: int, grid: int, s: dict, dataset) -> dict:
    """Sample through the device runtime, time the DDIM steps, score quality and seams."""
    from edgediff.bundle import read_manifest
    from edgediff.metrics import evaluate, quality_fields
    from edgediff.runtime.sampler import sample_bundle

    marks: list[float] = []
    res = sample_bundle(bundle, n=s["n_samples"], steps=s["sampler_steps"], seed=SEED, threads=1,
                        on_step=lambda k, total: marks.append(time.perf_counter()))
    loop_s = marks[-1] - marks[0]  # steps 2..N: the first step also pays for the arena's first allocations
    ms = 1000 * loop_s / ((len(marks) - 1) * s["n_samples"]) if len(marks) > 1 else None
    scores = evaluate(res.images, dataset, grid)
    m = read_manifest(bundle)
    return {"params": m.params, "steps": m.training["step"], **quality_fields(scores, digits=4),
            "seam_border": round(scores["seam_border"], 3),
            "seam_midcell": round(scores["seam_midcell"], 3), "ms_per_step": None if ms is None else round(ms, 2),
            "plan_cells_per_call": res.plan.cells_per_call, "images": res.images}


def peak_512(halo: int) -> float | None:
    """Peak RSS at 512 px grid 8 for this halo from the peak-memory benchmark's own result, if it was run."""
    path = RESULTS / "peak_memory.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("rows", [])
    hits = [r for r in rows if r.get("tool") == "edgediff" and r.get("resolution") == 512 and r.get("grid") == 8
            and r.get("precision") == "fp32" and int(r.get("halo", 0)) == halo and r.get("peak_mb")]
    return min(r["peak_mb"] for r in hits) if hits else None


def sheet(images: np.ndarray, path: Path) -> None:
    """An 8-wide sample sheet, upscaled 4× (nearest) so cell borders are visible to the eye."""
    save_sheet(images[:32], path, scale=4)


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "seam_border", "seam ratio at cell borders (1.0 = invisible)"),
                           (axes[1], "fd_lite0", "FD-Lite0 (lower is better)")):
        labels = [f"{r['image_size']}px g{r['grid']} {r['name']}" for r in body["rows"]]
        ax.barh(labels, [r[key] for r in body["rows"]], color="tab:blue")
        if key == "seam_border":
            for size, real in body["real"].items():
                ax.axvline(real["seam_border"], ls="--", color="gray", lw=1)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"halo cells, {body['settings']['steps']} training steps each (dashed: real images)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from edgediff.data import load_dataset
    from edgediff.metrics import seam_cell, seam_ratios

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None, help="runs and bundles (reused); default /tmp/edgediff_seams[_quick]")
    a = ap.parse_args(argv)
    s = QUICK if a.quick else FULL
    work = Path(a.workdir or f"/tmp/edgediff_seams{'_quick' if a.quick else ''}")
    name = "seams_quick.json" if a.quick else JSON_NAME
    body = {"machine": machine_info(), "note": SHARED_CPU_NOTE, "settings": {k: v for k, v in s.items()},
            "rows": [], "real": {}}
    for size, rows in s["cases"]:
        dataset = load_dataset("emoji", size)
        real = seam_ratios(dataset.images, seam_cell(size, max(g for g, _ in rows)))
        body["real"][str(size)] = {f"seam_{k}": round(v, 3) for k, v in real.items()}
        for grid, halo in rows:
            bundle = train_and_export(work, size, grid, halo, s)
            row = score_bundle(bundle, size, grid, s, dataset)
            images = row.pop("images")
            nm = row_name(grid, halo)
            sheet(images, RESULTS / f"seams_{size}px_g{grid}_{nm}{'_quick' if a.quick else ''}.png")
            body["rows"].append({"name": nm, "image_size": size, "grid": grid, "halo": halo, "shift": False,
                                 **row, "peak_mb_512": peak_512(halo) if grid > 1 else None})
            print(json.dumps(body["rows"][-1]), flush=True)
            body["machine"]["load_average"] = list(os.getloadavg())
            write_json(name, body)
    plot(body, RESULTS / name.replace(".json", ".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
