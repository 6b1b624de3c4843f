"""Does a larger base draw better 32 px pictures per training step? The question the GPU plan rests on.

Every emoji-128 picture keeps the layout emoji-32 draws (docs/scale.md), and emoji-32 has stopped improving with more
steps at its widths (default_more_steps.json), so the plan spends the first GPU minutes on a larger base. This
measures, on the CPU, what that buys per step: unet-l (4.5 M parameters) against unet-m (emoji-32's widths, 1.8 M),
both trained from scratch with emoji-32's recipe (benchmarks.cpu_bf16.recipe: 32 px, 2×2 cells, halo 4, batch 64,
lr 3e-4, seed 0) in bf16, and scored as every pair is (benchmarks.run_pair: `edgediff eval RUN --n N --steps 25
--seed 0 --guidance 3`, same noise and snippets). Each unet-l snapshot is compared with each unet-m one, and a pair
is marked as matched on steps, or on time: the CPU seconds those steps take on a quiet box at the bf16 rates
cpu_bf16.json measured (unet-l's step costs 1.8× unet-m's, so 1,000 unet-l steps match about 1,800 unet-m ones).

    python -m benchmarks.larger_base --small RUN[,RUN...] --large RUN[,RUN...] [--n 256] [--workdir DIR]
Writes benchmarks/results/larger_base.json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.common import SHARED_CPU_NOTE, machine_info, write_json
from benchmarks.run_pair import score_arm

GUIDANCE = 3.0
KEYS = ("fd_independent", "fd_lite0", "kid_independent")


def widths(run: Path) -> dict:
    """The widths, parameter count and precision of the checkpoint scored (the meta run_pair reads its step from)."""
    from edgediff.checkpoint import latest_checkpoint
    from edgediff.models import ModelConfig, build_model, count_params

    meta = latest_checkpoint(run)[1]
    model = meta["model"]
    return {"dim": model["dim"], "mults": model["mults"],
            "params": count_params(build_model(ModelConfig.from_dict(model))),
            "precision": meta["train"].get("precision")}


def quiet_seconds(step: int, dim: int) -> float:
    """What `step` bf16 steps of these widths take on this box when it is quiet (cpu_bf16.json's rates): the
    clock an equal-time pair is matched on, since the runs' own train_seconds include whatever shared the cores."""
    import json

    from benchmarks.common import RESULTS

    speed = json.loads((RESULTS / "cpu_bf16.json").read_text())["speed"]
    rate = next(row["steps_per_s_bf16"] for row in speed if row["dim"] == dim)
    return round(step / rate, 1)


def scored(run: Path, n: int, workdir: Path) -> dict:
    row, _ = score_arm(run, n, workdir, GUIDANCE)
    row["widths"] = widths(run)
    row["quiet_cpu_seconds"] = quiet_seconds(row["training"]["step"], row["widths"]["dim"])
    return row


def comparison(large: dict, small: dict) -> dict:
    """large ÷ small on each key, and whether the pair is matched on steps or on quiet CPU time (within 5%)."""
    same_time = abs(large["quiet_cpu_seconds"] - small["quiet_cpu_seconds"]) <= 0.05 * large["quiet_cpu_seconds"]
    same = "steps" if large["training"]["step"] == small["training"]["step"] else "time" if same_time else None
    return {"small_step": small["training"]["step"], "same": same,
            **{k: round(large["quality"][k] / small["quality"][k], 3) for k in KEYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", required=True, help="comma-separated snapshots of the unet-m run (emoji-32's widths)")
    ap.add_argument("--large", required=True, help="comma-separated snapshots of the unet-l run")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_cpu_bf16"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    small = [scored(Path(r), args.n, args.workdir) for r in args.small.split(",")]
    large = [scored(Path(r), args.n, args.workdir) for r in args.large.split(",")]
    for row in large:
        row["vs_small"] = [comparison(row, s) for s in small]
    matched = {c["same"]: c["fd_independent"] for row in large for c in row["vs_small"] if c["same"]}
    write_json("larger_base.json", {
        "benchmark": "larger_base", "machine": machine_info(), "note": SHARED_CPU_NOTE,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "how": f"edgediff eval RUN --n {args.n} --steps 25 --seed 0 --guidance {GUIDANCE:g}",
        "fd_independent_large_vs_small_same_steps": matched.get("steps"),
        "fd_independent_large_vs_small_same_time": matched.get("time"),
        "small": small, "large": large})


if __name__ == "__main__":
    main()
