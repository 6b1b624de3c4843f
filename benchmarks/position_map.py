"""The position map at 128 px, A/B: the emoji-128 cell run continued as it was (control) against the same weights
warm-started into a model with the position map (`--position-map`, ModelConfig.position_map), after the same number
of further training steps each.

What each arm measures, in this run: `edgediff eval RUN --n N --guidance 3 --seed 0` (the torch sampler on the
run's EMA weights, 25 DDIM steps): FD/KID in Lite0 space and in the independent network's, the seam ratios at the
cell borders and mid-cell with the real images' as controls; and the step and `train_seconds` its checkpoint
recorded. The PNG puts the two 16-image sheets side by side (same noise, same snippets).

    python -m benchmarks.position_map --control RUN --map RUN --start-step S [--n 32] [--workdir DIR]

Both RUNs are run folders (a snapshot of a run at one checkpoint works: docs/scale.md says how they were made). An
arm whose eval JSON is already in --workdir for the same run, n and seed is read back rather than sampled again (an
eval at 128 px takes ~30 min on a shared 2-core box).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, save_figure, write_json

SEED = 0
GUIDANCE = 3.0
STEPS = 25


def recorded_training(run: Path) -> dict:
    """Step, train_seconds and the warm start of the run's latest checkpoint (what its meta records)."""
    from edgediff.checkpoint import latest_checkpoint

    found = latest_checkpoint(run)
    if found is None:
        raise SystemExit(f"{run} has no checkpoint")
    meta = found[1]
    return {"step": int(meta["step"]), "train_seconds": meta.get("train_seconds"),
            "init_from": meta.get("train", {}).get("init_from"),
            "position_map": bool(meta.get("model", {}).get("position_map", False))}


def eval_arm(run: Path, n: int, workdir: Path) -> tuple[dict, Path]:
    """The arm's eval scores and its sheet: read back from `workdir` when measured already, else measured now."""
    stem = workdir / f"{run.name}_n{n}_s{SEED}"
    scores, sheet = stem.with_suffix(".json"), stem.with_suffix(".png")
    if not scores.exists():
        cmd = [sys.executable, "-m", "edgediff", "eval", str(run), "--n", str(n), "--steps", str(STEPS),
               "--seed", str(SEED), "--guidance", str(GUIDANCE), "--json", str(scores), "--save", str(sheet)]
        subprocess.run(cmd, check=True)
    return json.loads(scores.read_text()), sheet


def arm(run: Path, n: int, workdir: Path) -> tuple[dict, Path]:
    scores, sheet = eval_arm(run, n, workdir)
    keep = ("fd_lite0", "kid", "fd_independent", "kid_independent", "seam_border", "seam_midcell",
            "seam_border_real", "seam_midcell_real", "n_generated", "guidance", "sampler_steps", "seed")
    return {"run": str(run), "training": recorded_training(run), "quality": {k: scores.get(k) for k in keep}}, sheet


def plot(sheets: dict[str, Path], rows: dict[str, dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, len(sheets), figsize=(6 * len(sheets), 6.4))
    for ax, (name, sheet) in zip(axes, sheets.items()):
        q, t = rows[name]["quality"], rows[name]["training"]
        ax.imshow(Image.open(sheet))
        ax.set_title(f"{name}: step {t['step']}\nFD-indep {q['fd_independent']:.1f}, seams {q['seam_border']:.2f}")
        ax.axis("off")
    fig.suptitle("128 px, 8 × 8 cells: the position map, same further steps from the same weights")
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--control", type=Path, required=True, help="the run continued without the map")
    ap.add_argument("--map", type=Path, required=True, help="the same weights warm-started with --position-map")
    ap.add_argument("--start-step", type=int, required=True,
                    help="the control's step whose weights the map run was warm-started from")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_position_map"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows, sheets = {}, {}
    for name, run in (("control", args.control), ("map", args.map)):
        rows[name], sheets[name] = arm(run, args.n, args.workdir)
    c, m = rows["control"]["quality"], rows["map"]["quality"]
    body = {"machine": machine_info(), "note": SHARED_CPU_NOTE,
            "fd_independent_map_vs_control": round(m["fd_independent"] / c["fd_independent"], 3),
            "fd_lite0_map_vs_control": round(m["fd_lite0"] / c["fd_lite0"], 3),
            "start_step": args.start_step,
            "further_steps": {"control": rows["control"]["training"]["step"] - args.start_step,
                              "map": rows["map"]["training"]["step"]},
            **rows}
    write_json("position_map.json", body)
    plot(sheets, rows, RESULTS / "position_map.png")
    print(json.dumps({k: body[k] for k in ("fd_independent_map_vs_control", "fd_lite0_map_vs_control")}))


if __name__ == "__main__":
    main()
