"""Lean loading, measured: does the ORT format, or a session option, stop the weights being held twice?

For the default bundle's fp32 denoiser and its int8 (the default "diffusion" recipe), each as .onnx and as ORT
format (saved the way `edgediff export --ort` saves it), and each under the runtime's lean and fast session
settings plus one of
- nothing extra (today),
- `session.disable_prepacking` (no pre-packed weight copies),
- `session.use_ort_model_bytes_directly` + `session.use_ort_model_bytes_for_initializers` (ORT format only:
  initializers used in place from the model bytes, onnxruntime's own low-memory recipe),
one fresh process measures, through the profiler's `measure_one`: RSS growth while loading (load_peak_mb), after
loading (resident_mb), the activation peak at 16 cells per call, and ms per call.

    python -m benchmarks.lean_loading
Writes benchmarks/results/lean_loading.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import SHARED_CPU_NOTE, emit, machine_info, run_fresh, write_json
from edgediff.runtime.profile import measure_one
from edgediff.bundle import DEFAULT_BUNDLE
from edgediff.runtime.session import MODES

OPTIONS = {
    "none": (),
    "disable_prepacking": (("session.disable_prepacking", "1"),),
    "ort_bytes_in_place": (("session.use_ort_model_bytes_directly", "1"),
                           ("session.use_ort_model_bytes_for_initializers", "1")),
}
CELLS = 16


def fresh(path: Path, mode: str, option: str) -> dict:
    return run_fresh("benchmarks.lean_loading", ["--one", path, "--mode", mode, "--option", option])


def models(work: Path, bundle: Path) -> dict[str, Path]:
    """fp32 and int8 ("diffusion" recipe) as .onnx, and each converted to ORT format as `export --ort` does."""
    import shutil

    from edgediff_export.bundle_writer import to_ort_format
    from edgediff_export.calibration import denoiser_inputs
    from edgediff_export.int8_quality import bundle_run_data
    from edgediff_export.quantize import quantize_int8

    data, config = bundle_run_data(bundle)
    onnx_dir, ort_dir = work / "onnx", work / "ort"
    onnx_dir.mkdir()
    ort_dir.mkdir()
    shutil.copy(bundle / "denoiser.onnx", onnx_dir / "denoiser.onnx")
    if (bundle / "denoiser.int8.onnx").is_file():  # the bundle's own int8 (same recipe, no need to redo it)
        shutil.copy(bundle / "denoiser.int8.onnx", onnx_dir / "denoiser.int8.onnx")
    else:
        quantize_int8(onnx_dir / "denoiser.onnx", onnx_dir / "denoiser.int8.onnx", data, config, recipe="diffusion")
    files = {"denoiser_fp32": "denoiser.onnx", "denoiser_int8": "denoiser.int8.onnx"}
    for name in files.values():
        shutil.copy(onnx_dir / name, ort_dir / name)
    to_ort_format(ort_dir, files, denoiser_inputs(data, config, [999, 400, 0], images_per_t=2), print)
    return {"fp32 onnx": onnx_dir / "denoiser.onnx", "int8 onnx": onnx_dir / "denoiser.int8.onnx",
            "fp32 ort": ort_dir / files["denoiser_fp32"], "int8 ort": ort_dir / files["denoiser_int8"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle whose fp32 .onnx (and int8) to measure")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="lean", help=argparse.SUPPRESS)
    ap.add_argument("--option", default="none", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        emit(measure_one(a.one, MODES[a.mode].with_(config=OPTIONS[a.option]), CELLS))
        return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, path in models(Path(d), Path(a.bundle)).items():
            for mode in ("lean", "fast"):
                for option in OPTIONS:
                    if option == "ort_bytes_in_place" and path.suffix != ".ort":
                        continue
                    r = {"model": name, "mode": mode, "option": option, "bytes": path.stat().st_size,
                         **fresh(path, mode, option)}
                    r["peak_over_baseline_mb"] = round(max(r["load_peak_mb"], r["resident_mb"] + r["activation_mb"]), 2)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    write_json("lean_loading.json", {"benchmark": "lean_loading", "machine": machine_info(), "note": SHARED_CPU_NOTE,
                                     "bundle": a.bundle,
                                     "cells_per_call": CELLS, "options": {k: list(v) for k, v in OPTIONS.items()},
                                     "rows": rows})


if __name__ == "__main__":
    main()
