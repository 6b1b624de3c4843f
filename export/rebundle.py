"""`edgediff export BUNDLE_DIR --out OUT [--int8] [--ort]`: rebuild a bundle from its own fp32 ONNX, without its run.

Why: a bundle whose training run is gone (the shipped default's is not in the repository) can still gain an int8
denoiser or the ORT format. Calibration and measurement use the dataset the manifest names, each image paired with
its memory-bank entry decoded from the bundle's LUT (int8_quality.bundle_run_data). The fp32 file, the LUT, the
geometry and the training record are carried over unchanged; the int8 file, `quality.int8`, the ORT conversion and
the memory profile are made afresh, exactly as `export_run` makes them (the profile is kept when the denoiser files
are unchanged: a rebuild that only records sampling settings), and the result goes through the same `write_bundle`
(checked, atomic).
"""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import edgediff
from edgediff.bundle import file_entry, open_bundle, resolve, staging_dir, write_bundle
from edgediff.errors import EdgediffError
from edgediff_export.bundle_writer import (FILES, ExportResult, build_int8, check_out, drop_fp32,
                                           int8_sampler_changed, log_int8, measure_int8_as_sampled,
                                           measure_profile_of, parity_inputs, to_fp16_weights, to_ort_format)
from edgediff_export.int8_quality import bundle_run_data
from edgediff_export.options import ExportOptions


def rebundle(bundle_dir: str | Path, out: str | Path, options: ExportOptions = ExportOptions(), *,
             log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """Rebuild `bundle_dir` at `out` (may be the same folder) with an int8 denoiser and/or in ORT format, as
    `options` say (its lut_bytes does not apply: the bundle keeps its lookup table)."""
    bundle_dir, out = Path(bundle_dir), Path(out)
    m = open_bundle(bundle_dir)
    if "denoiser_fp32" not in m.files:
        raise EdgediffError(f"{bundle_dir} ships only its int8 denoiser (exported with --int8-only), so there is no "
                            "fp32 file to rebuild from; export from the training run instead")
    if not m.files["denoiser_fp32"].path.endswith(".onnx"):
        raise EdgediffError(f"{bundle_dir} holds no fp32 .onnx to rebuild from (it is already in ORT format); "
                            "export from the training run instead")
    check_out(out, bundle_dir, options.overwrite)
    sampling = options.sampling(has_bank=m.lut is not None, patch=m.geometry.patch, recorded=m.sampling)
    data, config = bundle_run_data(bundle_dir, data=m.training.get("data") or "emoji", seed=options.seed)
    stage = staging_dir(out)
    try:
        # an int8 file already there is carried over (with its quality.int8) unless --int8 asks for a new one
        int8 = options.int8
        files = {role: e.path for role, e in m.files.items() if not (int8 and role == "denoiser_int8")}
        for role, rel in files.items():
            shutil.copy(resolve(bundle_dir, m.files[role]), stage / rel)
        quality = replace(m.quality, ort_format=None)
        if int8:
            quality = replace(quality, int8=build_int8(stage / files["denoiser_fp32"], stage / FILES["denoiser_int8"],
                                                       data, config, m.training.get("data") or "emoji", options,
                                                       sampling=sampling, log=log))
            files["denoiser_int8"] = FILES["denoiser_int8"]
        elif options.int8_measure and int8_sampler_changed(quality.int8, sampling):
            quality = replace(quality, int8=_remeasure_int8(stage, files, quality.int8, data, config, m, options,
                                                            sampling, log))
        if options.int8_only:
            drop_fp32(stage, files, quality.int8, log)
        if options.fp16_weights:
            quality = replace(quality, fp16_weights=to_fp16_weights(stage, files, parity_inputs(data, config, options),
                                                                    log))
        if options.ort_format:
            quality = replace(quality, ort_format=to_ort_format(stage, files, parity_inputs(data, config, options),
                                                                log))
        entries = {role: file_entry(stage, rel) for role, rel in files.items()}
        same_files = entries == m.files and m.memory_profile is not None
        manifest = replace(m, files=entries, quality=quality, sampling=sampling,
                           memory_profile=m.memory_profile if same_files else None,
                           edgediff_version=edgediff.__version__,
                           created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if same_files:
            # Only manifest.sampling (or nothing) changed: the profile measured on these very files still holds,
            # and measuring it again on a busy box would only move the planner's choices by the noise.
            log("kept the memory profile: the denoiser files are unchanged")
        elif options.profile:
            log("measuring the memory profile of each denoiser in fresh processes")
            manifest.memory_profile = measure_profile_of(stage, manifest, options)
        write_bundle(out, manifest, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportResult(out=out, manifest=manifest, messages=[f"bundle written to {out}"], source="bundle")


def _remeasure_int8(stage: Path, files: dict[str, str], recorded: dict, data, config, m, options: ExportOptions,
                    sampling: dict, log: Callable[[str], None]) -> dict:
    """The carried-over int8 file measured again, as many images as before, with the sampler the bundle now
    records: a `quality.int8` of another guidance or η would let the int8 gate judge a sampler nobody runs."""
    log("int8: its recorded measurement used another guidance or η than the bundle now records; measuring again")
    again = measure_int8_as_sampled(stage / files["denoiser_fp32"], stage / files["denoiser_int8"], data, config,
                                    m.training.get("data") or "emoji",
                                    replace(options, int8_images=recorded["images"]["n"]), sampling=sampling, log=log)
    report = {**recorded, **again}
    log_int8(report, log)
    return report
