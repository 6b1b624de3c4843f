"""The memory profile a bundle carries: measured, never estimated, with exactly the sessions the planner builds.

`edgediff export` calls `measure_profile(staging_dir, manifest)` and stores the result as `manifest.memory_profile`; the
planner then budgets with it on the device. Every number comes from a *fresh* Python process (one per variant,
mode and cells-per-call), because a process that already ran other sessions carries their heap and arena with it.

    python -m edgediff.runtime.profile BUNDLE_OR_STAGING_DIR [--modes lean,fast] [--cells 1,2,4] [--calls 3]

prints the profile as JSON. Definitions (MiB of RSS, /proc/self/status):
- baseline_mb: fresh interpreter with numpy, onnxruntime and this module imported (the largest seen);
- resident_mb: RSS growth that stays after creating the session (weights, graph, kernels);
- settings["load_peak_mb"][key]: peak RSS growth *while* creating it (ORT_ENABLE_ALL reorders weights through
  temporaries: +20 MiB over the settled figure at 256 px), a separate, earlier phase of the run;
- activation_mb[k]: peak RSS growth above the settled post-load RSS over `calls` runs of k cells per call (the
  peak is taken over several calls because arena + memory pattern double activation memory from the second one);
- ms_per_call[k]: the fastest call after the first (cores are shared; the minimum is the least noisy figure).
Variant keys: "fp32", "int8" for the lean mode (what budgets rely on) and "fp32@fast", "int8@fast" for the fast mode;
`settings["modes"]` records each mode's `SessionSettings`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgediff.bundle import (FILES, MANIFEST_NAME, ROLE, Manifest, MemoryProfile, VariantProfile, read_manifest, resolve,
                             variant_key)
from edgediff.errors import EdgediffError
from edgediff.cells import CellGeometry, example_feeds as example_feeds_for
from edgediff.runtime import rss
from edgediff.runtime.session import MODES, SessionSettings, create_session

DEFAULT_FILES = {variant: FILES[role] for variant, role in ROLE.items()}  # a staging folder has no manifest yet
DEFAULT_CELLS = (1, 2, 4)
SMALL_CELL_CELLS = (1, 2, 4, 8, 16)  # cells of <= 32 px: batching pays, so measure it where it does
SMALL_CELL_SIDE = 32
DEFAULT_CALLS = 3


def model_files(bundle_dir: str | Path, manifest: Manifest | None = None) -> dict[str, Path]:
    """The denoiser files of a bundle: from `manifest` (export passes the one it is about to write), else from
    the folder's manifest.json, else (a staging folder) by their default names."""
    root = Path(bundle_dir)
    if manifest is None and (root / MANIFEST_NAME).is_file():
        manifest = read_manifest(root)
    if manifest is not None:
        return {v: resolve(root, manifest.files[r]) for v, r in ROLE.items() if r in manifest.files}
    found = {v: root / name for v, name in DEFAULT_FILES.items() if (root / name).is_file()}
    if "fp32" not in found:
        raise EdgediffError(f"{root} holds neither manifest.json nor denoiser.onnx; pass a bundle or export staging folder")
    return found


def session_geometry(session) -> tuple[CellGeometry, int]:
    """The cell geometry and snippet width a denoiser session implies (its input and output shapes), so a model file
    can be profiled without its manifest: output p × p, inputs side p + 2·halo, position grid²."""
    shapes = {i.name: i.shape for i in session.get_inputs()}
    p = int(session.get_outputs()[0].shape[-1])
    channels, side = int(shapes["global_content"][1]), int(shapes["global_content"][-1])
    grid = math.isqrt(int(shapes["position"][1]))
    return CellGeometry(p * grid, channels, grid, (side - p) // 2), int(shapes["snippet"][1])


def example_feeds(session, cells: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Well-formed inputs for `cells` rows of this session's model (edgediff.cells.example_feeds)."""
    geom, snippet_dim = session_geometry(session)
    return example_feeds_for(geom, snippet_dim, cells, seed)


def measure_one(model_path: str | Path, settings: SessionSettings, cells: int, calls: int = DEFAULT_CALLS) -> dict:
    """Run in a fresh process: load one model under `settings`, then `calls` runs of `cells` cells."""
    base = rss.current_mb()
    rss.reset_peak()
    session = create_session(model_path, settings)
    load_peak = rss.peak_mb() - base
    resident = rss.current_mb() - base
    feeds = example_feeds(session, cells)
    settled = rss.current_mb()
    rss.reset_peak()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    activation = max(0.0, rss.peak_mb() - settled)
    deadline = time.perf_counter() + 0.5
    while len(times) < 12 and time.perf_counter() < deadline:  # cheap models: more calls for a steadier time
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "baseline_mb": round(base, 2),
        "resident_mb": round(resident, 2),
        "load_peak_mb": round(max(load_peak, resident), 2),
        "activation_mb": round(activation, 2),
        "ms_per_call": round(min(times[1:] or times), 3),
    }


def _fresh(model: Path, mode: str, cells: int, calls: int) -> dict:
    cmd = [sys.executable, "-m", "edgediff.runtime.profile", "--one", str(model), "--mode", mode,
           "--cells", str(cells), "--calls", str(calls)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgediffError(f"memory profiling of {model.name} ({mode}, {cells} cells) failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_profile(
    bundle_dir: str | Path,
    manifest: Manifest | None = None,
    *,
    modes: tuple[str, ...] = ("lean", "fast"),
    cells: tuple[int, ...] | None = None,
    calls: int = DEFAULT_CALLS,
    variants: tuple[str, ...] | None = None,
) -> MemoryProfile:
    """Measure every (variant, mode, cells) in its own fresh process and assemble the manifest's profile. `cells`
    None: 1, 2, 4 cells per call, and also 8 and 16 for cells of at most 32 px (the planner assumes no speed-up
    beyond the largest measured batch, so small cells need those points to be batched)."""
    if cells is None:
        m = manifest if manifest is not None else read_manifest(bundle_dir)
        cells = SMALL_CELL_CELLS if m.patch_size <= SMALL_CELL_SIDE else DEFAULT_CELLS
    files = model_files(bundle_dir, manifest)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise EdgediffError(f"unknown profile mode(s) {unknown}; use {sorted(MODES)}")
    baseline = 0.0
    out: dict[str, VariantProfile] = {}
    load_peaks: dict[str, float] = {}
    for variant, path in files.items():
        if variants is not None and variant not in variants:
            continue
        for mode in modes:
            resident, load_peak, acts, ms = 0.0, 0.0, {}, {}
            for k in cells:
                r = _fresh(path, mode, k, calls)
                baseline = max(baseline, r["baseline_mb"])
                resident = max(resident, r["resident_mb"])
                load_peak = max(load_peak, r["load_peak_mb"])
                acts[str(k)], ms[str(k)] = r["activation_mb"], r["ms_per_call"]
            key = variant_key(variant, mode)
            out[key] = VariantProfile(resident_mb=resident, activation_mb=acts, ms_per_call=ms)
            load_peaks[key] = load_peak
    import onnxruntime

    settings = {
        "modes": {m: MODES[m].to_dict() for m in modes},
        "load_peak_mb": load_peaks,
        "calls": calls,
        "threads": 1,
        "onnxruntime": onnxruntime.__version__,
        "method": "fresh process per variant/mode/cells; RSS from /proc/self/status VmHWM with clear_refs resets",
    }
    return MemoryProfile(baseline_mb=round(baseline, 2), variants=out, settings=settings)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgediff.runtime.profile", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="?", help="bundle directory or export staging folder")
    ap.add_argument("--modes", default="lean,fast")
    ap.add_argument("--cells", default=None, help="comma list (default: 1,2,4, plus 8,16 for cells <= 32 px)")
    ap.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    ap.add_argument("--variants", default=None, help="comma list of fp32,int8 (default: every file present)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement, this process
    ap.add_argument("--mode", default="lean", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure_one(a.one, MODES[a.mode], int(a.cells or 1), a.calls)))
        return 0
    if not a.bundle:
        ap.error("pass a bundle directory")
    from dataclasses import asdict

    try:
        prof = measure_profile(a.bundle, modes=tuple(a.modes.split(",")),
                               cells=tuple(int(c) for c in a.cells.split(",")) if a.cells else None,
                               calls=a.calls, variants=tuple(a.variants.split(",")) if a.variants else None)
    except EdgediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(prof), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
