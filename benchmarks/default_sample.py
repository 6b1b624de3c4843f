"""The README's first command, measured: `edgediff sample` on the shipped default bundle, each run a fresh process.

Records the plan line, the peak RSS and wall time the command prints, plus the bundle's size, for the default plan
(no budget) and for pinned cells per call. When the bundle ships int8, it also asks the planner for the smallest
budget of each precision (a 1 MiB budget is refused with the floor named) and runs at int8's (below fp32's),
and times the default plan against `--precision fp32` (alternating fresh processes, medians): what int8 buys per
DDIM step at the plans the planner picks. Writes benchmarks/results/default_sample.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, compact_png, machine_info, write_json
from edgediff.bundle import DEFAULT_BUNDLE


BUNDLE: list[str] = []  # empty: the shipped default (the README's first command); --bundle sets another


def run(extra: list[str], out: Path, bundle: list[str] | None = None, n: int = 16, steps: int = 25) -> dict:
    """`edgediff sample` in a fresh process: the peak RSS and sampling wall time it prints, its own wall time and
    plan. `bundle` is the positional argument ([] = the shipped default; None = BUNDLE)."""
    cmd = [sys.executable, "-m", "edgediff.cli", "sample", *(BUNDLE if bundle is None else bundle), "--n", str(n),
           "--steps", str(steps), "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak = re.search(r"peak RSS ([0-9.]+) MiB(?: \(budget [^)]*\))?, wall time ([0-9.]+) s", proc.stdout)
    plan = next((line for line in proc.stdout.splitlines() if line.startswith("plan:")), "")
    return {"args": extra, "peak_mb": float(peak.group(1)), "sampling_wall_s": float(peak.group(2)),
            "process_wall_s": round(wall, 2), "plan": plan}


def planner_floor(precision: str) -> float:
    """The smallest budget the planner accepts for this command at `precision` (its refusal names it)."""
    cmd = [sys.executable, "-m", "edgediff.cli", "sample", *BUNDLE, "--n", "16", "--steps", "25",
           "--precision", precision,
           "--memory-budget", "1MiB", "--out", str(Path(tempfile.gettempdir()) / "edgediff_floor_probe.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    found = re.search(r"pass --memory-budget ([0-9.]+)MiB", proc.stderr)
    if proc.returncode == 0 or not found:
        raise SystemExit(f"the planner did not refuse a 1 MiB budget: {proc.stderr[-300:]}")
    return float(found.group(1))


def precision_speed(tmp: Path, rounds: int = 3) -> dict:
    """The default plan against the plan fp32 gets when pinned (`--precision fp32`), run alternately `rounds` times
    each (the shared cores' load moves within minutes): median sampling wall time and peak of each, and the ratio."""
    walls: dict[str, list[float]] = {"default": [], "fp32": []}
    peaks: dict[str, float] = {}
    plans: dict[str, str] = {}
    for i in range(rounds):
        for name, extra in (("default", []), ("fp32", ["--precision", "fp32"])):
            r = run(extra, tmp / f"speed_{name}_{i}.png")
            walls[name].append(r["sampling_wall_s"])
            peaks[name], plans[name] = r["peak_mb"], r["plan"]
    med = {k: sorted(v)[len(v) // 2] for k, v in walls.items()}
    return {"rounds": rounds, "sampling_wall_s": walls, "median_s": med, "peak_mb": peaks, "plans": plans,
            "fp32_over_default": round(med["fp32"] / med["default"], 3)}


def keep_grid(grid_png: Path, path: Path, scale: int = 4) -> Path:
    """The grid `edgediff sample` wrote, enlarged `scale`× (nearest: the pixels as sampled), palette-coded."""
    import numpy as np
    from PIL import Image

    from edgediff.images import save_png

    return compact_png(save_png(np.asarray(Image.open(grid_png).convert("RGB")), path, scale=scale))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default=None, help="measure this bundle instead of the shipped default")
    ap.add_argument("--json", default="default_sample.json", help="result file under benchmarks/results")
    a = ap.parse_args()
    from edgediff.bundle import read_manifest

    bundle = DEFAULT_BUNDLE if a.bundle is None else Path(a.bundle)
    BUNDLE[:] = [] if a.bundle is None else [a.bundle]
    size = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file() and p.suffix != ".py")
    body: dict = {"machine": machine_info(), "note": SHARED_CPU_NOTE, "bundle": a.bundle or "shipped default",
                  "bundle_bytes": size, "n": 16, "steps": 25,
                  "files": {r: e.path for r, e in read_manifest(bundle).files.items()}}
    with tempfile.TemporaryDirectory() as d:
        rows = [run([], Path(d) / "a.png"), run(["--cells-per-call", "16"], Path(d) / "b.png")]
        if a.bundle is None:  # the README's picture: the first command's own grid, enlarged 4×
            keep_grid(Path(d) / "a.png", RESULTS / "default_samples.png")
        if "denoiser_int8" in body["files"]:
            body["precision_speed"] = precision_speed(Path(d))
            floors = {p: planner_floor(p) for p in ("fp32", "int8")}
            body["planner_floor_mb"] = floors
            if floors["int8"] < floors["fp32"]:  # int8's own floor: a budget fp32 cannot meet
                rows.append(run(["--memory-budget", f"{floors['int8']:.1f}MiB"], Path(d) / "c.png"))
    if "precision_speed" in body:
        ps = body["precision_speed"]
        print(f"default plan vs --precision fp32 (median of {ps['rounds']}): {ps['median_s']['default']} s vs "
              f"{ps['median_s']['fp32']} s (fp32 ÷ default {ps['fp32_over_default']}×)")
    for r in rows:
        print(f"{' '.join(r['args']) or 'default plan'}: peak {r['peak_mb']} MiB, {r['sampling_wall_s']} s; "
              f"{r['plan']}")
    write_json(a.json, {**body, "rows": rows})


if __name__ == "__main__":
    main()
