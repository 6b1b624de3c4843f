"""Does `train --precision bf16` pay on a CPU, and does it train as well as float32?

Speed: the emoji-32 recipe's geometry (32 px, 2×2 cells, halo 4, batch 64, bank on) at two widths, unet-m (the
default's, 1.8 M parameters) and unet-l (4.5 M), each trained for a few steps in float32 and in bf16 autocast,
alternated over rounds in fresh runs, so a busy spell of the shared box falls on both.

Quality: one pair of runs from scratch, the same seed and recipe, float32 against bf16, trained for `--pair-steps`
and scored as every pair is (benchmarks.run_pair: `edgediff eval RUN --n N --steps 25 --seed 0 --guidance 3`, FD
in Lite0 space and in the independent network's); besides, their losses step by step. A pair already trained in
`--workdir` is resumed to the asked steps, and evals already done there are read back.

    python -m benchmarks.cpu_bf16 [--pair-steps 1000] [--n 256] [--workdir DIR]
Writes benchmarks/results/cpu_bf16.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SHARED_CPU_NOTE, machine_info, write_json
from benchmarks.run_pair import ratio, score_arm
from edgediff.precision import cpu_has_native_bf16
from edgediff.train import TrainConfig, train

WIDTHS = {"unet-m": 40, "unet-l": 64}
PRECISIONS = ("fp32", "bf16")
GUIDANCE = 3.0


def recipe(out: Path, dim: int, precision: str, steps: int) -> TrainConfig:
    """The emoji-32 recipe (docs/default-model.md) at width `dim`, without previews or checkpoints between."""
    return TrainConfig(data="emoji", out=str(out), image_size=32, grid=2, halo=4, steps=steps, batch_size=64,
                       lr=3e-4, seed=0, sample_every=0, checkpoint_every=max(steps, 1), precision=precision,
                       model={"dim": dim, "mults": [1, 2, 2]})


def speed_rows(steps: int, rounds: int) -> list[dict]:
    """Steps per second of each width and precision, the precisions alternated within each round."""
    seen: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as wd:
        for r in range(rounds):
            for name, dim in WIDTHS.items():
                for precision in PRECISIONS:
                    result = train(recipe(Path(wd) / f"{name}_{precision}_{r}", dim, precision, steps), progress=False)
                    seen.setdefault((name, precision), []).append(result["steps_per_s"])
                    print(f"round {r}: {name} {precision} {result['steps_per_s']:.2f} steps/s", flush=True)
    rows = []
    for name in WIDTHS:
        fp32, bf16 = (float(np.mean(seen[(name, p)])) for p in PRECISIONS)
        rows.append({"widths": name, "dim": WIDTHS[name], "steps_per_s_fp32": fp32, "steps_per_s_bf16": bf16,
                     "bf16_speedup": round(bf16 / fp32, 3), "per_round": {p: seen[(name, p)] for p in PRECISIONS}})
    return rows


def train_pair(workdir: Path, steps: int) -> dict[str, Path]:
    """The quality pair's run folders, trained (or resumed) to `steps`."""
    runs = {}
    for precision in PRECISIONS:
        out = workdir / f"pair_{precision}"
        train(recipe(out, WIDTHS["unet-m"], precision, steps), resume=(out / "run.json").exists(), progress=False)
        runs[precision] = out
    return runs


def losses(run: Path) -> np.ndarray:
    from edgediff.checkpoint import latest_checkpoint

    return np.asarray(latest_checkpoint(run)[1]["losses"], dtype=np.float64)


def pair_body(workdir: Path, steps: int, n: int) -> dict:
    runs = train_pair(workdir, steps)
    rows = {p: score_arm(runs[p], n, workdir, GUIDANCE)[0] for p in PRECISIONS}
    curves = {p: losses(runs[p]) for p in PRECISIONS}
    tail = min(200, steps)
    return {
        "fd_independent_bf16_vs_fp32": ratio(rows, "bf16", "fp32"),
        "fd_lite0_bf16_vs_fp32": ratio(rows, "bf16", "fp32", "fd_lite0"),
        "mean_loss_last_steps": {"steps": tail, **{p: float(curves[p][-tail:].mean()) for p in PRECISIONS}},
        "largest_loss_gap_first_50_steps": float(np.abs(curves["bf16"][:50] - curves["fp32"][:50]).max()),
        **rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pair-steps", type=int, default=1000)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_cpu_bf16"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    speed = speed_rows(args.speed_steps, args.rounds)
    pair = pair_body(args.workdir, args.pair_steps, args.n)
    write_json("cpu_bf16.json", {
        "benchmark": "cpu_bf16", "machine": machine_info(), "note": SHARED_CPU_NOTE,
        "cpu_has_native_bf16": cpu_has_native_bf16(), "torch_threads": torch.get_num_threads(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "recipe": recipe(Path("RUN"), WIDTHS["unet-m"], "PRECISION", args.pair_steps).command(),
        "settings": vars(args) | {"workdir": str(args.workdir)},
        "bf16_speedup": {row["widths"]: row["bf16_speedup"] for row in speed},
        "speed": speed, "pair": pair})


if __name__ == "__main__":
    main()
