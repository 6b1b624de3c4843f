"""Does a larger base draw better 32 px pictures per training step? The question the GPU plan rests on.

Every emoji-128 picture keeps the layout emoji-32 draws (docs/scale.md), and emoji-32 has stopped improving with more
steps at its widths (default_more_steps.json), so the plan spends the first GPU minutes on a larger base. This
measures, on the CPU, what that buys per step: unet-l (4.5 M parameters) against unet-m (emoji-32's widths, 1.8 M),
both trained from scratch with emoji-32's recipe (benchmarks.cpu_bf16.recipe: 32 px, 2×2 cells, halo 4, batch 64,
lr 3e-4, seed 0) in bf16, and scored as every pair is (benchmarks.run_pair: `edgediff eval RUN --n N --steps 25
--seed 0 --guidance 3`, same noise and snippets). Arms at the same step get a ratio; a later snapshot of the larger
run is reported beside them.

    python -m benchmarks.larger_base --small RUN --large RUN[,RUN...] [--n 256] [--workdir DIR]
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
    """The run's recorded widths, parameter count and precision (run.json)."""
    import json

    from edgediff.models import ModelConfig, build_model, count_params

    body = json.loads((run / "run.json").read_text())
    model = body["model"]
    return {"dim": model["dim"], "mults": model["mults"],
            "params": count_params(build_model(ModelConfig.from_dict(model))),
            "precision": body["train"].get("precision")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=Path, required=True, help="the unet-m run (emoji-32's widths)")
    ap.add_argument("--large", required=True, help="comma-separated snapshots of the unet-l run")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_cpu_bf16"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    small, _ = score_arm(args.small, args.n, args.workdir, GUIDANCE)
    small["widths"] = widths(args.small)
    rows = []
    for run in (Path(r) for r in args.large.split(",")):
        row, _ = score_arm(run, args.n, args.workdir, GUIDANCE)
        row["widths"] = widths(run)
        if row["training"]["step"] == small["training"]["step"]:
            row["vs_small_same_steps"] = {k: round(row["quality"][k] / small["quality"][k], 3) for k in KEYS}
        rows.append(row)
    write_json("larger_base.json", {
        "benchmark": "larger_base", "machine": machine_info(), "note": SHARED_CPU_NOTE,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "how": f"edgediff eval RUN --n {args.n} --steps 25 --seed 0 --guidance {GUIDANCE:g}",
        "small": small, "large": rows})


if __name__ == "__main__":
    main()
