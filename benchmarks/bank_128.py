"""Does the memory bank earn its place at 128 px? One pair of equal-step runs of the emoji-128 recipe, with the bank
and without (`--no-memory`), scored in FD-independent (issue 23, item 6; at 32 px it did not: memory_ablation.json).

The bank arm is scored as the product uses it, at the guidance its bundle records (3), and, with `--unguided`,
also at guidance 1: the snippet as conditioning alone, so what the bank's conditioning buys is told apart from what
guidance buys. A run without a bank has nothing to guide with, so its arm is sampled at 1. Every arm is scored as
every 128 px pair is (benchmarks.run_pair), with the same noise.

    python -m benchmarks.bank_128 --bank RUN --none RUN [--n 64] [--unguided] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, write_json
from benchmarks.run_pair import plot_sheets, ratio, score_arm

GUIDANCE = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=Path, required=True, help="the emoji-128 run with its memory bank")
    ap.add_argument("--none", type=Path, required=True, help="the same recipe with --no-memory, as many steps")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--unguided", action="store_true", help="also score the bank arm at guidance 1")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_bank_128"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    arms = [("bank", args.bank, GUIDANCE)] + ([("bank_unguided", args.bank, 1.0)] if args.unguided else [])
    arms.append(("none", args.none, None))
    rows, sheets = {}, {}
    for name, run, guidance in arms:
        rows[name], sheets[name] = score_arm(run, args.n, args.workdir, guidance)
    steps = {name: row["training"]["step"] for name, row in rows.items()}
    if len(set(steps.values())) != 1:
        raise SystemExit(f"the arms are not at the same step ({steps}): snapshot them at one step first")
    ratios = {f"fd_independent_{name}_vs_none": ratio(rows, name, "none") for name in rows if name != "none"}
    ratios |= {f"fd_lite0_{name}_vs_none": ratio(rows, name, "none", "fd_lite0") for name in rows if name != "none"}
    body = {"machine": machine_info(), "note": SHARED_CPU_NOTE, **ratios, "step": steps["none"], **rows}
    write_json("bank_128.json", body)
    plot_sheets(sheets, rows, f"128 px, 8 × 8 cells, step {steps['none']}: the memory bank against none",
                RESULTS / "bank_128.png")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
