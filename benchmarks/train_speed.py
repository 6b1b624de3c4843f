"""Training throughput (steps/s) at 32 px for grid 1, 2 and 4: what the patch formulation buys during training.

Each grid trains the same UNet widths for a fixed number of steps (after a few warm-up steps) in this process;
`--quick` shortens the runs. Writes benchmarks/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.common import SHARED_CPU_NOTE, machine_info, write_json
from edgediff.train import TrainConfig, train


def measure(grid: int, steps: int, batch_size: int, dim: int, workdir: str) -> dict:
    cfg = TrainConfig(data="emoji", out=f"{workdir}/g{grid}", image_size=32, grid=grid, steps=steps,
                      batch_size=batch_size, memory=False, sample_every=0, checkpoint_every=10**9,
                      model={"dim": dim, "mults": [1, 2, 2]})
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    wall = time.perf_counter() - t0
    return {"grid": grid, "patch": 32 // grid, "steps": steps, "steps_per_s": result["steps_per_s"],
            "examples_per_s": result["steps_per_s"] * batch_size, "params": result["params"], "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    steps = 15 if args.quick else 60
    with tempfile.TemporaryDirectory() as wd:
        rows = [measure(g, steps, args.batch_size, args.dim, wd) for g in (1, 2, 4)]
    for r in rows:
        print(f"grid {r['grid']} (patch {r['patch']} px): {r['steps_per_s']:.2f} steps/s, {r['params']:,} params")
    write_json("train_speed.json", {"machine": machine_info(), "note": SHARED_CPU_NOTE, "torch_threads":
               torch.get_num_threads(), "settings": vars(args) | {"steps": steps, "image_size": 32}, "rows": rows})


if __name__ == "__main__":
    main()
