"""The README quick-start, run as a new user would: fresh dataset/feature cache, the real `edgediff` commands in
subprocesses, with what each printed and how long it took; then the same training again with the cache warm (what
every later run costs). Writes benchmarks/results/quickstart.json and quickstart_samples.png (the sampled grid),
the source of the README's "what to expect from a minute of CPU training".

    python -m benchmarks.quickstart [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, write_json

TRAIN = ["train", "--data", "emoji", "--image-size", "32", "--grid", "2", "--dim", "32", "--mults", "1,2",
         "--batch-size", "32", "--checkpoint-every", "50"]


def run(args: list[str], env: dict, cwd: Path) -> dict:
    """One `edgediff` command: exit code, wall seconds, stdout lines and the stderr tail."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgediff", *args], capture_output=True, text=True, env=env, cwd=cwd)
    return {"command": "edgediff " + " ".join(args), "rc": proc.returncode,
            "wall_s": round(time.perf_counter() - t0, 1), "stdout": proc.stdout.splitlines(),
            "stderr_tail": proc.stderr[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        env = dict(os.environ, EDGEDIFF_CACHE=str(wd / "cache"))  # a new user's empty cache
        steps = str(args.steps)
        rows = [run(TRAIN + ["--steps", steps, "--sample-every", steps, "--out", "runs/quick"], env, wd)]
        rows.append(run(["export", "runs/quick", "--out", "bundles/quick"], env, wd))
        rows.append(run(["sample", "bundles/quick", "--out", "quick.png"], env, wd))
        rows.append(run(TRAIN + ["--steps", steps, "--sample-every", steps, "--out", "runs/warm"], env, wd))
        preview = wd / "runs" / "quick" / "samples" / f"step_{args.steps:06d}.png"
        if (wd / "quick.png").is_file():
            shutil.copyfile(wd / "quick.png", RESULTS / "quickstart_samples.png")
        for r in rows:
            print(f"{r['command']}: rc {r['rc']}, {r['wall_s']} s")
            print("  " + "\n  ".join(r["stdout"][-6:]))
        write_json("quickstart.json", {"machine": machine_info(), "note": SHARED_CPU_NOTE, "settings": vars(args),
                                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                       "fresh_cache": True, "preview_written": preview.is_file(), "rows": rows})


if __name__ == "__main__":
    main()
