"""Does a better base make emoji-128's pictures better? The shipped emoji-128, sampled as `edgediff sample emoji-128`
samples it, once through its recorded base (emoji-32) and once through each candidate base in its place.

Why: every emoji-128 picture keeps the layout its base draws (docs/scale.md), so the base bounds how many of the 16
on issue 23's sheet are recognisable. A candidate is worth shipping only if it moves the 128 px pictures, not just
its own 32 px ones. Each row measures, in this run:
- the base alone at 32 px, scored as default_eval.json scores emoji-32 (benchmarks.more_steps.score: `edgediff
  eval BUNDLE --data emoji --n 256 --steps 25 --seed 0`, each bundle's own guidance);
- the base alone as a first command would run it: peak RSS and seconds per image of `edgediff sample BASE` in fresh
  processes at n = 1 and 16 (benchmarks.scale.memory_speed), what a base replacing the default would cost;
- emoji-128 redrawing that base's images at its recorded strength, cell shift and η, scored as scale.json scores
  the shipped model (benchmarks.scale.quality: n = 64, seed 0, 25 DDIM steps): same noise, snippets and 128 px
  weights in every row, so only the base differs;
- that cascade's own cost: peak RSS and seconds per image of `edgediff sample emoji-128 --base BASE --n 16` in a
  fresh process, the figure issue 23's memory goal (≤ 110 MiB) is read from;
- what shipping it would take: each file's bytes (git holds 20 MB) and what export measured of its int8 file.
The figure puts each candidate's first 16 128 px images side by side (left to right), for the count by eye that
the issue asks for; the recorded base's 16 are the sheet emoji128_samples.png shows (its row here reproduces
scale.json's scores), so they are not stored twice in git's 20 MB.

    python -m benchmarks.base_swap --bases BUNDLE[,BUNDLE...] [--n32 256] [--n128 64] [--sheets N] [--name NAME]
Writes benchmarks/results/NAME.json (default base_swap) and NAME.png (none with --sheets 0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, compact_png, machine_info, write_json
from benchmarks.more_steps import score as score_32px
from benchmarks.scale import STEPS, memory_speed, quality

RECORDED_BASE = "emoji-32"
KEYS = ("fd_independent", "fd_lite0", "kid_independent")


def row(base: str, final: Path, cell: int, n32: int, n128: int, tmp: Path) -> tuple[dict, np.ndarray]:
    """One base: its own 32 px scores and sampling cost, and emoji-128's scores through it (with the first 16
    images, for the sheet)."""
    from edgediff.bundle import read_manifest
    from edgediff.shipped import expand

    bundle = expand(base)
    m = read_manifest(bundle)
    q128, images = quality(final, n128, cell, base=base)
    return {"base": base, "params": m.params,
            "widths": {"dim": m.model_config.dim, "mults": list(m.model_config.mults)},
            "file_bytes": {role: f.bytes for role, f in m.files.items()}, "int8": int8_summary(m.quality.int8),
            "base_32px": score_32px(bundle, n32, STEPS), "base_sample": memory_speed(bundle, tmp),
            "cascade_128px": q128,
            "cascade_sample": memory_speed(final, tmp, extra=("--base", str(bundle)), sizes=(16,))}, images[:16]


def int8_summary(q: dict | None) -> dict | None:
    """What export measured about the base's int8 file (recipe, PSNR and FD change against fp32, the gate's
    verdict), without the per-conv detail: the planner samples int8 first only where the gate passes."""
    from edgediff.int8_gate import int8_failures

    if not q:
        return None
    return {"recipe": q.get("recipe"), "psnr_vs_fp32_db": q.get("psnr_vs_fp32_db"),
            "fd_delta_rel": {k: d["rel"] for k, d in (q.get("fd_delta") or {}).items()},
            "rel_error_by_band": q.get("rel_error_by_band"), "gate_failures": int8_failures(q)}


def ratios(candidate: dict, recorded: dict) -> dict:
    """candidate ÷ recorded base on each key, at 32 px (the bases alone) and at 128 px (emoji-128 through them)."""
    return {where: {k: round(candidate[where][k] / recorded[where][k], 3) for k in KEYS}
            for where in ("base_32px", "cascade_128px")}


def save_sheets(sheets: list[np.ndarray], path: Path, gap: int = 16) -> Path:
    """Each 16-image sheet as a 4×4 grid, left to right, on white: real pixels, no resampling, palette-coded like
    every results figure."""
    from edgediff.images import make_grid, save_png

    grids = [make_grid(s, nrow=4) for s in sheets]
    spacer = np.full((grids[0].shape[0], gap, 3), 255, np.uint8)
    strip = np.concatenate([part for g in grids for part in (g, spacer)][:-1], axis=1)
    return compact_png(save_png(strip, path))


def main(argv: list[str] | None = None) -> int:
    from edgediff.bundle import read_manifest
    from edgediff.shipped import shipped_bundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", required=True, help="comma-separated candidate base bundles (32 px, same bank data)")
    ap.add_argument("--final", type=Path, help="the 128 px bundle (default: the shipped emoji-128)")
    ap.add_argument("--n32", type=int, default=256, help="images per base for its own 32 px scores")
    ap.add_argument("--n128", type=int, default=64, help="images per row at 128 px")
    ap.add_argument("--name", default="base_swap", help="result name: results/NAME.json and NAME.png")
    ap.add_argument("--sheets", type=int, default=None,
                    help="how many candidates' sheets the figure holds, the first N of --bases (default: all; 0: "
                         "no figure); each is about 80 KB of git's 20 MB")
    a = ap.parse_args(argv)
    final = a.final or shipped_bundle("emoji-128")
    final_m = read_manifest(final)
    cell = final_m.image_size // final_m.grid  # the 128 px model's cell: where its seams are measured
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        measured = [row(b, final, cell, a.n32, a.n128, Path(tmp)) for b in [RECORDED_BASE, *a.bases.split(",")]]
    rows = [r for r, _ in measured]
    candidates = measured[1:][:a.sheets]
    sheet_bases = [r["base"] for r, _ in candidates]
    for r in rows[1:]:
        r["vs_recorded_base"] = ratios(r, rows[0])
    write_json(f"{a.name}.json", {
        "benchmark": "base_swap", "machine": machine_info(), "note": SHARED_CPU_NOTE,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "final": str(final.name), "settings": {"n32": a.n32, "n128": a.n128, "ddim_steps": STEPS, "seed": 0},
        "figure": "the first 16 128 px images of each base in figure_bases, left to right; the recorded "
                  "base's are emoji128_samples.png", "figure_bases": sheet_bases,
        "fd_independent_128_vs_recorded_base": [r["vs_recorded_base"]["cascade_128px"]["fd_independent"]
                                                for r in rows[1:]],
        "rows": rows})
    if candidates:
        save_sheets([s for _, s in candidates], RESULTS / f"{a.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
