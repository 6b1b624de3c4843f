"""A lever of the 128 px recipe, A/B from one set of weights: the emoji-128 cell run continued as it was (control)
against the same weights warm-started with one thing changed, each scored after its further training steps.

Levers (each writes benchmarks/results/NAME.json and NAME.png):
- `position_map`: `--position-map` (ModelConfig.position_map), the cell's place drawn on the global content.
- `schedule_shift`: `--schedule-shift 4` (edgediff.schedule.shift_snr), training where the 128 px layout is undecided.

Each arm is scored as every 128 px pair is (benchmarks.run_pair: `edgediff eval` at guidance 3, the preset's, 25 DDIM
steps, seed 0); the PNG puts the two 16-image sheets side by side (same noise, same snippets).

    python -m benchmarks.lever NAME --control RUN --lever RUN --start-step S [--n 32] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, write_json
from benchmarks.run_pair import lever_pair, plot_sheets

GUIDANCE = 3.0
LEVERS = {  # name → (the lever arm's name in the JSON, the figure's title)
    "position_map": ("map", "the position map"),
    "schedule_shift": ("shift", "the schedule shift (SNR ÷ 16)"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(LEVERS))
    ap.add_argument("--control", type=Path, required=True, help="the run continued as it was")
    ap.add_argument("--lever", type=Path, required=True, help="the same weights warm-started with the lever on")
    ap.add_argument("--start-step", type=int, required=True,
                    help="the control's step whose weights the lever run was warm-started from")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgediff_levers"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    arm, what = LEVERS[args.name]
    pair, sheets = lever_pair(args.control, args.lever, arm, args.start_step, args.n, args.workdir, GUIDANCE)
    body = {"machine": machine_info(), "note": SHARED_CPU_NOTE, **pair}
    write_json(f"{args.name}.json", body)
    plot_sheets(sheets, pair, f"128 px, 8 × 8 cells: {what}, same further steps from the same weights",
                RESULTS / f"{args.name}.png")
    print(json.dumps({k: v for k, v in body.items() if k.endswith("_vs_control")}))


if __name__ == "__main__":
    main()
