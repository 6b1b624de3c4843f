"""How strongly a 128 px bundle should redraw the base model's images: the strength of its recorded cascade, chosen
by measurement, with the two controls that say whether the cascade earns its place.

Rows, all n images of one seed through the device runtime (onnxruntime, 25 DDIM steps, each bundle's guidance):
- "upscaled base": the base bundle's images (emoji-32) enlarged bicubically, with no redraw. If the cascade does
  not beat this, the 128 px model adds nothing a resize would not;
- one row per strength: the same base images redrawn by the 128 px bundle from that share of the steps;
- "from noise": the 128 px bundle alone (strength 1, no base): what it draws without a layout handed to it.
Each is scored like every 128 px benchmark (`edgediff.metrics.evaluate`: FD/KID in Lite0 space and in the
independent network's; seam ratios at the 128 px model's cell borders and mid-cell, with real images' as controls).

The seed (1) differs from the scale ladder's (0), so the strength is not chosen on the images it is judged by.

    python -m benchmarks.cascade --bundle BUNDLE [--base emoji-32] [--strengths 0.3,0.5,0.7] [--n 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, save_figure, write_json

SEED = 1
STEPS = 25


def score(images, dataset, grid: int, cell: int) -> dict:
    """FD/KID in both feature spaces and seam ratios at `cell`-px lines, with the real images' seams beside."""
    from edgediff.metrics import evaluate, quality_fields, seam_ratios

    seams, real = seam_ratios(images, cell), seam_ratios(dataset.images, cell)
    return {**quality_fields(evaluate(images, dataset, grid), digits=4), "seam_border": round(seams["border"], 3),
            "seam_midcell": round(seams["midcell"], 3), "seam_border_real": round(real["border"], 3),
            "seam_midcell_real": round(real["midcell"], 3)}


def rows(bundle: Path, base: str, strengths: list[float], n: int, noise_row: bool = True
         ) -> tuple[list[dict], dict]:
    """Every row's scores and seconds, and each row's first 8 images for the sheet. `noise_row` False leaves out
    the costliest control (25 steps from noise) when only more strengths are wanted."""
    from edgediff.bundle import read_manifest
    from edgediff.data import load_dataset
    from edgediff.images import resize
    from edgediff.runtime.sampler import BundleSampler, SampleRequest

    m = read_manifest(bundle)
    dataset = load_dataset(m.training.get("data") or "emoji", m.image_size)
    cell = m.image_size // m.grid
    out, sheets = [], {}

    def add(name: str, strength: float | None, images, seconds: float) -> None:
        out.append({"row": name, "strength": strength, "seconds": round(seconds, 1),
                    **score(images, dataset, m.grid, cell)})
        sheets[name] = images[:8]
        print(json.dumps(out[-1]), flush=True)

    t0 = time.perf_counter()
    base_images = BundleSampler(base, SampleRequest(n=n, steps=STEPS, seed=SEED)).run().images
    base_s = time.perf_counter() - t0
    add("upscaled base", 0.0, resize(base_images, m.image_size), base_s)
    for s in strengths:
        t0 = time.perf_counter()
        images = BundleSampler(bundle, SampleRequest(n=n, steps=STEPS, seed=SEED, strength=s)).run(
            init=base_images).images
        add(f"strength {s:g}", s, images, base_s + time.perf_counter() - t0)
    if noise_row:
        t0 = time.perf_counter()
        add("from noise", 1.0, BundleSampler(bundle, SampleRequest(n=n, steps=STEPS, seed=SEED)).run().images,
            time.perf_counter() - t0)
    return out, sheets


def summarize(table: list[dict]) -> dict:
    """The strength with the lowest FD-independent, and its FD-independent over the two controls' (None where a
    control was left out)."""
    cascades = [r for r in table if r["row"].startswith("strength")]
    best = min(cascades, key=lambda r: r["fd_independent"])
    control = {r["row"]: r["fd_independent"] for r in table if not r["row"].startswith("strength")}

    def vs(name: str) -> float | None:
        return round(best["fd_independent"] / control[name], 3) if name in control else None

    return {"best_strength": best["strength"], "best_vs_upscaled_base": vs("upscaled base"),
            "best_vs_from_noise": vs("from noise")}


def plot(body: dict, sheets: dict, path: Path) -> None:
    """FD-independent by row, and each row's first images, one row of the sheet per row of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgediff.images import make_grid

    names = [r["row"] for r in body["rows"]]
    fig = plt.figure(figsize=(13, 1.6 * len(names) + 0.6))
    ax = fig.add_axes([0.11, 0.08, 0.2, 0.84])
    ax.barh(names[::-1], [r["fd_independent"] for r in body["rows"]][::-1], color="tab:blue")
    ax.set_xlabel("FD-independent (lower is better)", fontsize=8)
    ax.tick_params(labelsize=8)
    img = fig.add_axes([0.36, 0.02, 0.62, 0.96])
    img.imshow(np.concatenate([make_grid(sheets[n], nrow=8) for n in names]))
    img.set_axis_off()
    fig.suptitle(f"{body['bundle']} redrawing {body['base']}'s images (n = {body['settings']['n']}, seed {SEED}); "
                 "sheet rows top to bottom = bars top to bottom", fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="the 128 px bundle (its recorded base is ignored)")
    ap.add_argument("--base", default="emoji-32", help="the base model: a shipped name or a bundle folder")
    ap.add_argument("--strengths", default="0.3,0.5,0.7", help="comma-separated strengths to try")
    ap.add_argument("--n", type=int, default=64, help="images per row")
    ap.add_argument("--name", default="cascade", help="result name: results/NAME.json and NAME.png")
    ap.add_argument("--no-noise-row", action="store_true", help="leave out the from-noise control (more strengths only)")
    a = ap.parse_args(argv)
    strengths = [float(s) for s in a.strengths.split(",")]
    table, sheets = rows(a.bundle, a.base, strengths, a.n, noise_row=not a.no_noise_row)
    body = {"machine": {**machine_info(), "load_average": list(os.getloadavg())}, "note": SHARED_CPU_NOTE,
            "bundle": a.bundle.name, "base": str(a.base), "settings": {"n": a.n, "ddim_steps": STEPS, "seed": SEED},
            **summarize(table), "rows": table}
    write_json(f"{a.name}.json", body)
    plot(body, sheets, RESULTS / f"{a.name}.png")
    print(json.dumps({k: body[k] for k in ("best_strength", "best_vs_upscaled_base", "best_vs_from_noise")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
