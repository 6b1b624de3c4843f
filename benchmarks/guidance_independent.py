"""Does bank guidance's FD gain on the shipped default bundle hold in a metric the bank cannot game?

Bank guidance pushes samples towards the snippet, i.e. towards EfficientNet-Lite0 features, and FD-Lite0 is
measured in that same space; so its gain (README: 129 → 105 at guidance 1 → 3) may partly be the metric being
fitted. This scores the default bundle exactly as benchmarks/results/default_eval.json did (`edgediff eval
edgediff/default_bundle --data emoji --n 256 --steps 25 --seed 0`, device runtime, random bank entries) at each
guidance, in Lite0 space and in the independent network's. Same seed, so the same noise and bank entries in every
row: only the guidance differs. Writes benchmarks/results/default_guidance_independent.json.
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine_info, write_json
from edgediff.evaluate import eval_command
from edgediff.metrics import quality_fields
from edgediff.bundle import DEFAULT_BUNDLE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--guidance", default="1,3", help="comma-separated guidance scales")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=25)
    a = ap.parse_args()
    rows = []
    for g in (float(x) for x in a.guidance.split(",")):
        r = eval_command(DEFAULT_BUNDLE, data="emoji", n=a.n, steps=a.steps, seed=0, guidance=g)
        rows.append({"guidance": g, **quality_fields(r), "seam_border": r["seam_border"]})
        print(f"guidance {g:g}: FD-Lite0 {r['fd_lite0']:.2f} KID {r['kid']:.4f} | FD-independent "
              f"{r['fd_independent']:.2f} KID {r['kid_independent']:.4f}", flush=True)
    base = rows[0]
    gains = {f"{row['guidance']:g}": {m: 1.0 - row[m] / base[m] for m in ("fd_lite0", "fd_independent", "kid",
                                                                          "kid_independent")} for row in rows[1:]}
    write_json("default_guidance_independent.json", {
        "benchmark": "default_guidance_independent", "machine": machine_info(), "bundle": str(DEFAULT_BUNDLE),
        "how": f"edgediff eval BUNDLE --data emoji --n {a.n} --steps {a.steps} --seed 0 --guidance W per row",
        "metric_independent": base["metric_independent"], "rows": rows,
        "relative_gain_vs_first_row": gains})


if __name__ == "__main__":
    main()
