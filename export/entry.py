"""`edgediff export SOURCE --out OUT`: the one entry point, for a training run or for a bundle.

Why its own module: `bundle_writer.export_from_run` builds a bundle from a run, and `rebundle` rebuilds one from a
bundle's own fp32 ONNX using bundle_writer's steps. The choice between the two lives here, above both, so that
neither module has to import the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgediff.bundle import is_bundle
from edgediff.errors import EdgediffError
from edgediff_export.bundle_writer import ExportResult, export_from_run
from edgediff_export.options import DEFAULT_LUT_BYTES, ExportOptions
from edgediff_export.rebundle import rebundle


def export_run(source: str | Path, out: str | Path, options: ExportOptions = ExportOptions(), *,
               log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """SOURCE (a run: its latest checkpoint's EMA weights; or a bundle without its run, e.g. the shipped default)
    → verified bundle at `out`, made as `options` say. Raises EdgediffError on any refusal."""
    source = Path(source)
    if not is_bundle(source):
        return export_from_run(source, out, options, log=log)
    if options.lut_bytes != DEFAULT_LUT_BYTES:
        raise EdgediffError("--lut-bytes needs the run's float bank; a bundle keeps its lookup table: drop it")
    return rebundle(source, out, options, log=log)
