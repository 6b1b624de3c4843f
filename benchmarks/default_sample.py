"""The README's first command, measured: `edgediff sample` on the shipped default bundle, each run a fresh process.

Records the plan line, the peak RSS and wall time the command prints, plus the bundle's size, for the default plan
(no budget) and for pinned cells per call. Writes benchmarks/results/default_sample.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED_CPU_NOTE, machine_info, write_json
from edgediff.runtime.sampler import DEFAULT_BUNDLE


def run(extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgediff.cli", "sample", "--n", "16", "--steps", "25", "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak = re.search(r"peak RSS ([0-9.]+) MiB, wall time ([0-9.]+) s", proc.stdout)
    plan = next((line for line in proc.stdout.splitlines() if line.startswith("plan:")), "")
    return {"args": extra, "peak_mb": float(peak.group(1)), "sampling_wall_s": float(peak.group(2)),
            "process_wall_s": round(wall, 2), "plan": plan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args()
    size = sum(p.stat().st_size for p in DEFAULT_BUNDLE.iterdir() if p.is_file() and p.suffix != ".py")
    with tempfile.TemporaryDirectory() as d:
        rows = [run([], Path(d) / "a.png"), run(["--cells-per-call", "16"], Path(d) / "b.png")]
    for r in rows:
        print(f"{' '.join(r['args']) or 'default plan'}: peak {r['peak_mb']} MiB, {r['sampling_wall_s']} s")
    write_json("default_sample.json", {"machine": machine_info(), "note": SHARED_CPU_NOTE,
                                       "bundle_bytes": size, "n": 16, "steps": 25, "rows": rows})


if __name__ == "__main__":
    main()
