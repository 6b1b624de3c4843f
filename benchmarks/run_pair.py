"""Two training runs scored side by side: the one way the 128 px A/B benchmarks (position map, bank vs none) measure
an arm, so every pair is sampled, scored and drawn alike.

An arm is a run folder (a snapshot of a run at one checkpoint works: docs/scale.md says how they are made) scored by
`edgediff eval RUN --n N --steps 25 --seed 0 [--guidance G]`: the torch sampler on the run's EMA weights, FD/KID in
Lite0 space and in the independent network's, the seam ratios at the cell borders and mid-cell with the real
images' as controls; beside it the step, `train_seconds` and warm start its checkpoint recorded. Every arm of one
benchmark gets the same noise and, where it has a bank, the same snippets (same seed).

An eval at 128 px takes 10–35 min on the shared 2-core box, so an arm whose eval JSON is already in the work folder
for the same run, n, seed and guidance is read back rather than sampled again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEED = 0
STEPS = 25
QUALITY_KEYS = ("fd_lite0", "kid", "fd_independent", "kid_independent", "seam_border", "seam_midcell",
                "seam_border_real", "seam_midcell_real", "n_generated", "memory", "guidance", "sampler_steps", "seed")


def recorded_training(run: Path) -> dict:
    """Step, train_seconds, warm start, bank use and position map of the run's latest checkpoint (its meta)."""
    from edgediff.checkpoint import latest_checkpoint

    found = latest_checkpoint(run)
    if found is None:
        raise SystemExit(f"{run} has no checkpoint")
    meta = found[1]
    train, model = meta.get("train", {}), meta.get("model", {})
    return {"step": int(meta["step"]), "train_seconds": meta.get("train_seconds"),
            "init_from": train.get("init_from"), "memory": bool(train.get("memory", True)),
            "position_map": bool(model.get("position_map", False))}


def eval_arm(run: Path, n: int, workdir: Path, guidance: float | None) -> tuple[dict, Path]:
    """The arm's eval scores and its 16-image sheet: read back from `workdir` when measured already, else measured
    now. guidance None: the eval's own default (1, no guidance: what a run without a bank can only do)."""
    tag = "" if guidance is None else f"_g{guidance:g}"
    stem = workdir / f"{run.name}_n{n}_s{SEED}{tag}"
    scores, sheet = stem.with_suffix(".json"), stem.with_suffix(".png")
    if not scores.exists():
        cmd = [sys.executable, "-m", "edgediff", "eval", str(run), "--n", str(n), "--steps", str(STEPS),
               "--seed", str(SEED), "--json", str(scores), "--save", str(sheet)]
        cmd += [] if guidance is None else ["--guidance", str(guidance)]
        subprocess.run(cmd, check=True)
    return json.loads(scores.read_text()), sheet


def score_arm(run: Path, n: int, workdir: Path, guidance: float | None) -> tuple[dict, Path]:
    """One arm's row for the result JSON (run, training, quality) and its sheet."""
    scores, sheet = eval_arm(run, n, workdir, guidance)
    row = {"run": str(run), "training": recorded_training(run), "quality": {k: scores.get(k) for k in QUALITY_KEYS}}
    return row, sheet


def ratio(rows: dict[str, dict], a: str, b: str, key: str = "fd_independent") -> float:
    """rows[a] ÷ rows[b] on one quality key, rounded for the JSON (below 1: a is the better arm)."""
    return round(rows[a]["quality"][key] / rows[b]["quality"][key], 3)


def plot_sheets(sheets: dict[str, Path], rows: dict[str, dict], title: str, path: Path) -> None:
    """The arms' sheets side by side, each titled with its step, FD-independent and seam ratio."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from benchmarks.common import save_figure

    fig, axes = plt.subplots(1, len(sheets), figsize=(6 * len(sheets), 6.4))
    for ax, (name, sheet) in zip(axes, sheets.items()):
        q, t = rows[name]["quality"], rows[name]["training"]
        ax.imshow(Image.open(sheet))
        ax.set_title(f"{name}: step {t['step']}\nFD-indep {q['fd_independent']:.1f}, seams {q['seam_border']:.2f}")
        ax.axis("off")
    fig.suptitle(title)
    save_figure(fig, path)


def lever_pair(control: Path, lever: Path, lever_name: str, start_step: int, n: int, workdir: Path,
               guidance: float) -> tuple[dict, dict[str, Path]]:
    """A lever A/B from one set of weights: `control` continued as it was, `lever` warm-started from the control's
    step `start_step` with one thing changed, each scored after its further steps. Returns the result body's
    comparison part (ratios lever ÷ control, further steps, both rows) and the two sheets."""
    rows, sheets = {}, {}
    for name, run in (("control", control), (lever_name, lever)):
        rows[name], sheets[name] = score_arm(run, n, workdir, guidance)
    body = {f"fd_independent_{lever_name}_vs_control": ratio(rows, lever_name, "control"),
            f"fd_lite0_{lever_name}_vs_control": ratio(rows, lever_name, "control", "fd_lite0"),
            "start_step": start_step,
            "further_steps": {"control": rows["control"]["training"]["step"] - start_step,
                              lever_name: rows[lever_name]["training"]["step"]},
            **rows}
    return body, sheets
