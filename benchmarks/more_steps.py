"""Does training the shipped emoji-32 on make its pictures better, and by how much per hour of CPU?

emoji-32 decides the layout of every emoji-128 picture (the cascade, docs/scale.md), so its pictures bound how many
of emoji-128's are recognisable. Each candidate bundle here is a run warm-started from the shipped weights
(`edgediff train ... --init-from emoji-32`) and exported as the default was (fp32, guidance 3). All are scored
exactly as benchmarks/results/default_eval.json scored the default (`edgediff eval BUNDLE --data emoji --n 256
--steps 25 --seed 0`, device runtime, the bundle's guidance): same noise and bank entries in every row, so only the
weights differ. Writes benchmarks/results/default_more_steps.json.

    python -m benchmarks.more_steps --bundles BUNDLE[,BUNDLE...] [--n 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import machine_info, repo_path, write_json
from edgediff.bundle import DEFAULT_BUNDLE, read_manifest
from edgediff.evaluate import eval_command
from edgediff.metrics import quality_fields

RATIO_KEYS = ("fd_lite0", "fd_independent", "kid", "kid_independent")


def training_record(bundle: Path) -> dict:
    """What a row's weights are: the steps of its last run, how long they took and where they started from."""
    t = read_manifest(bundle).training or {}
    settings = t.get("settings", {})
    return {"steps": t.get("step"), "train_seconds": t.get("train_seconds"), "lr": settings.get("lr"),
            "init_from": settings.get("init_from"), "seed": settings.get("seed"), "command": t.get("command")}


def score(bundle: Path, n: int, steps: int) -> dict:
    r = eval_command(bundle, data="emoji", n=n, steps=steps, seed=0)
    print(f"{bundle}: FD-Lite0 {r['fd_lite0']:.2f} | FD-independent {r['fd_independent']:.2f} | seams "
          f"{r['seam_border']:.3f}", flush=True)
    return {"bundle": repo_path(bundle), "training": training_record(bundle), **quality_fields(r),
            "seam_border": r["seam_border"], "seam_midcell": r["seam_midcell"], "guidance": r["guidance"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundles", required=True, help="comma-separated bundles warm-started from the default")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=25)
    a = ap.parse_args()
    rows = [score(Path(b), a.n, a.steps) for b in [DEFAULT_BUNDLE, *a.bundles.split(",")]]
    base = rows[0]
    for row in rows[1:]:
        row["vs_default"] = {k: row[k] / base[k] for k in RATIO_KEYS}
    write_json("default_more_steps.json", {
        "benchmark": "default_more_steps", "machine": machine_info(),
        "how": f"edgediff eval BUNDLE --data emoji --n {a.n} --steps {a.steps} --seed 0 (each bundle's guidance)",
        "metric_independent": base["metric_independent"], "rows": rows})


if __name__ == "__main__":
    main()
