"""torch → bundle: ONNX export with a parity check, static int8 calibration, the PQ lookup table, the bundle writer.

Installed as `edgediff_export` (never as a top-level `export`). `export_run(run_dir, out, ExportOptions(...))` is
the one entry point the CLI calls; the modules below each do one job:

    options.py        ExportOptions: every setting of an export (int8, ORT, calibration, parity, profile), one value
    calibration.py    real denoiser inputs from a run's training data (parity check and int8 calibration)
    onnx_export.py    torch.onnx.export of the EMA model (one file, opset 18, dynamic batch) + parity check
    quantize.py       static QDQ int8 with per-channel weights, calibrated over timesteps and grid cells
    bundle_writer.py  stage files, build the Manifest, measure the memory profile, write_bundle
    rebundle.py       the same from a bundle's own fp32 ONNX (int8 or ORT added to a bundle without its run)
    entry.py          export_run: a run goes to bundle_writer, a bundle to rebundle
"""

from edgediff_export.bundle_writer import ExportResult
from edgediff_export.entry import export_run
from edgediff_export.options import ExportOptions

__all__ = ["export_run", "ExportOptions", "ExportResult"]
