"""DDIM's η on the shipped emoji-32: deterministic steps (η = 0, what every bundle sampled with before) against fresh
seeded noise at every step (η = 1, ancestral), in both feature spaces, at the first command's 25 steps and at 50.

Why it is worth a row: emoji-32 has plateaued (benchmarks/results/default_more_steps.json: 2,000 further steps move
FD-independent by 1.4%), and it decides the layout of every emoji-128 picture, so a sampler that draws cleaner
shapes from the same weights is the cheapest lever left. Each row is scored exactly as default_eval.json was
(`edgediff eval BUNDLE --data emoji --n 256 --seed 0`, device runtime, guidance 3), with only η and the steps
changed. Writes benchmarks/results/default_eta.json.

    python -m benchmarks.eta [--rows 0:25,0.5:25,1:25,1:50] [--n 256] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import machine_info, repo_path, write_json
from edgediff.bundle import DEFAULT_BUNDLE
from edgediff.evaluate import eval_command
from edgediff.metrics import quality_fields


def parse_rows(text: str) -> list[tuple[float, int]]:
    """'ETA:STEPS,...' → [(eta, steps), ...]."""
    rows = []
    for item in text.split(","):
        eta, steps = item.split(":")
        rows.append((float(eta), int(steps)))
    return rows


def score(bundle: Path, eta: float, steps: int, n: int) -> dict:
    t0 = time.perf_counter()
    r = eval_command(bundle, data="emoji", n=n, steps=steps, seed=0, eta=eta)
    row = {"eta": eta, "steps": steps, **quality_fields(r), "seam_border": round(r["seam_border"], 4),
           "seam_border_real": round(r["seam_border_real"], 4), "guidance": r["guidance"],
           "seconds": round(time.perf_counter() - t0, 1)}
    print(f"eta {eta:g}, {steps} steps: FD-Lite0 {row['fd_lite0']:.2f} | FD-independent {row['fd_independent']:.2f}"
          f" | KID-independent {row['kid_independent']:.4f} | seams {row['seam_border']:.3f}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="0:25,0.5:25,1:25,1:50", help="comma-separated ETA:STEPS pairs; the first is "
                                                                     "the reference")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    a = ap.parse_args()
    rows = [score(a.bundle, eta, steps, a.n) for eta, steps in parse_rows(a.rows)]
    ref = rows[0]
    for row in rows[1:]:
        row["vs_first_row"] = {k: round(row[k] / ref[k], 4) for k in ("fd_lite0", "fd_independent", "kid",
                                                                       "kid_independent")}
    write_json("default_eta.json", {
        "benchmark": "default_eta", "machine": machine_info(), "bundle": repo_path(a.bundle),
        "how": f"edgediff eval BUNDLE --data emoji --n {a.n} --seed 0 --eta ETA --steps STEPS (bundle's guidance)",
        "note": "seconds: the whole eval (sampling and scoring) on a shared 2-core box, for scale only",
        "metric_independent": ref["metric_independent"], "rows": rows})


if __name__ == "__main__":
    main()
