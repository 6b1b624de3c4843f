"""DDIM's η on the shipped emoji-32: deterministic steps (η = 0, what every bundle sampled with before) against fresh
seeded noise at every step (η = 1, ancestral), in both feature spaces, at the first command's 25 steps and at 50.

Why it is worth a row: emoji-32 has plateaued (benchmarks/results/default_more_steps.json: 2,000 further steps move
FD-independent by 1.4%), and it decides the layout of every emoji-128 picture, so a sampler that draws cleaner
shapes from the same weights is the cheapest lever left. Each row is scored exactly as default_eval.json was
(`edgediff eval BUNDLE --data emoji --n 256 --seed 0`, device runtime, guidance 3), with only η and the steps
changed. Writes benchmarks/results/default_eta.json.

    python -m benchmarks.eta [--rows 0:25,0.5:25,1:25,1:50] [--n 256] [--bundle DIR]
    python -m benchmarks.eta --rows 1:25:3,1:25:4.5,1:25:6 --name default_eta_guidance   # guidance at eta 1

A row's optional third field is the guidance (default: the bundle's), so the same script answers whether stronger
bank guidance draws more recognisable layouts once every step adds fresh noise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import machine_info, repo_path, write_json
from edgediff.bundle import DEFAULT_BUNDLE
from edgediff.evaluate import eval_command
from edgediff.metrics import quality_fields


def parse_rows(text: str) -> list[tuple[float, int, float | None]]:
    """'ETA:STEPS[:GUIDANCE],...' → [(eta, steps, guidance or None for the bundle's), ...]."""
    rows = []
    for item in text.split(","):
        eta, steps, *guidance = item.split(":")
        rows.append((float(eta), int(steps), float(guidance[0]) if guidance else None))
    return rows


def score(bundle: Path, eta: float, steps: int, guidance: float | None, n: int) -> dict:
    t0 = time.perf_counter()
    r = eval_command(bundle, data="emoji", n=n, steps=steps, seed=0, eta=eta, guidance=guidance)
    row = {"eta": eta, "steps": steps, **quality_fields(r), "seam_border": round(r["seam_border"], 4),
           "seam_border_real": round(r["seam_border_real"], 4), "guidance": r["guidance"],
           "seconds": round(time.perf_counter() - t0, 1)}
    print(f"eta {eta:g}, {steps} steps, guidance {row['guidance']:g}: FD-Lite0 {row['fd_lite0']:.2f}"
          f" | FD-independent {row['fd_independent']:.2f} | KID-independent {row['kid_independent']:.4f}"
          f" | seams {row['seam_border']:.3f}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="0:25,0.5:25,1:25,1:50", help="comma-separated ETA:STEPS pairs; the first is "
                                                                     "the reference")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--name", default="default_eta", help="result name: benchmarks/results/NAME.json")
    a = ap.parse_args()
    rows = [score(a.bundle, eta, steps, g, a.n) for eta, steps, g in parse_rows(a.rows)]
    ref = rows[0]
    for row in rows[1:]:
        row["vs_first_row"] = {k: round(row[k] / ref[k], 4) for k in ("fd_lite0", "fd_independent", "kid",
                                                                       "kid_independent")}
    write_json(f"{a.name}.json", {
        "benchmark": a.name, "machine": machine_info(), "bundle": repo_path(a.bundle),
        "how": f"edgediff eval BUNDLE --data emoji --n {a.n} --seed 0 --eta ETA --steps STEPS [--guidance W]"
               " (the bundle's guidance where a row names none)",
        "note": "seconds: the whole eval (sampling and scoring) on a shared 2-core box, for scale only",
        "metric_independent": ref["metric_independent"], "rows": rows})


if __name__ == "__main__":
    main()
