"""The position map at 128 px, A/B: the emoji-128 cell run continued as it was (control) against the same weights
warm-started into a model with the position map (`--position-map`, ModelConfig.position_map), after the same number
of further training steps each.

Each arm is scored as every 128 px pair is (benchmarks.run_pair: `edgediff eval` at guidance 3, the preset's,
25 DDIM steps, seed 0); the PNG puts the two 16-image sheets side by side (same noise, same snippets).

    python -m benchmarks.position_map --control RUN --map RUN --start-step S [--n 32] [--workdir DIR]
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
        rows[name], sheets[name] = score_arm(run, args.n, args.workdir, GUIDANCE)
    body = {"machine": machine_info(), "note": SHARED_CPU_NOTE,
            "fd_independent_map_vs_control": ratio(rows, "map", "control"),
            "fd_lite0_map_vs_control": ratio(rows, "map", "control", "fd_lite0"),
            "start_step": args.start_step,
            "further_steps": {"control": rows["control"]["training"]["step"] - args.start_step,
                              "map": rows["map"]["training"]["step"]},
            **rows}
    write_json("position_map.json", body)
    plot_sheets(sheets, rows, "128 px, 8 × 8 cells: the position map, same further steps from the same weights",
                RESULTS / "position_map.png")
    print(json.dumps({k: body[k] for k in ("fd_independent_map_vs_control", "fd_lite0_map_vs_control")}))


if __name__ == "__main__":
    main()
