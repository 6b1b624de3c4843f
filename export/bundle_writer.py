"""Assemble a bundle from a run: stage every file, describe it in a `Manifest`, hand it to `write_bundle`.

Order matters for trust: the fp32 ONNX must pass its parity check against torch before anything else is built
on it; the int8 file and the LUT are derived from it and the bank; the memory profile is measured last, on the
staged files themselves, in fresh processes. Only then does `edgediff.bundle.write_bundle` write manifest.json
and swap the folder into place, so a failure at any step leaves no bundle (or the previous one) behind.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import edgediff
from edgediff.bundle import (FILES, MANIFEST_NAME, SCHEMA_VERSION, LutSpec, Manifest, MemoryProfile, Quality,
                             TensorSpec, file_entry, is_bundle, staging_dir, write_bundle)
from edgediff.errors import EdgediffError
from edgediff.files import atomic_write_bytes
from edgediff.lut import mean_cosine, train_pq
from edgediff.models import count_params
from edgediff.units import MIB
from edgediff_export.calibration import RunData, denoiser_inputs, load_run_bank, load_run_data
from edgediff_export.onnx_export import check_parity, export_onnx
from edgediff_export.options import ExportOptions

ORT_SAVE_LEVEL = "extended"  # portable across CPUs (ORT_ENABLE_ALL would bake this CPU's NCHWc layout into the file)
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    messages: list[str] = field(default_factory=list)
    source: str = "run"  # "run": exported from a training run; "bundle": rebuilt from a bundle's own fp32 ONNX

    def summary(self, source_dir: str | Path) -> str:
        """The command's last line: what was read (a run, or a bundle rebuilt), which training step the weights
        are, and what was written. It once said "exported BUNDLE" for a rebuild, and never named the step."""
        step = self.manifest.training.get("step", "unknown")
        files = ", ".join(f"{f.path} ({f.bytes / MIB:.2f} MiB)" for f in self.manifest.files.values())
        if self.source == "bundle":
            what = f"rebuilt bundle {source_dir} (training step {step}) from its own fp32 ONNX as {self.out}"
        else:
            what = f"exported training run {source_dir} at step {step} (EMA weights) → {self.out}"
        return f"{what}: {files}; inspect with 'edgediff info {self.out}'"


def tensor_specs(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as the ONNX file itself declares them (the manifest must describe the real file)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def spec(v) -> TensorSpec:
        tt = v.type.tensor_type
        shape = ["batch" if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        return TensorSpec(name=v.name, dtype=_ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)), shape=shape)

    inits = {i.name for i in graph.initializer}
    return [spec(v) for v in graph.input if v.name not in inits], [spec(v) for v in graph.output]


def save_npy(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def build_lut(bank: np.ndarray, lut_bytes: int, stage: Path, seed: int = 0) -> tuple[LutSpec, dict]:
    """Train PQ on the whole bank, write codes + codebooks; returns the layout and how faithful it is."""
    pq = train_pq(bank, lut_bytes, seed=seed)
    codes = pq.encode(bank)
    save_npy(stage / FILES["lut_codes"], codes)
    save_npy(stage / FILES["lut_codebooks"], pq.codebooks.astype(np.float32))
    spec = LutSpec(entries=int(bank.shape[0]), dim=int(bank.shape[1]), subvectors=pq.subvectors,
                   centroids=pq.centroids)
    stats = {"lut_mean_cosine": mean_cosine(bank, pq.decode(codes)),
             "lut_bytes_per_entry": spec.bytes_per_entry, "float_bank_bytes_per_entry": 4 * spec.dim}
    return spec, stats


def measure_profile_of(stage: Path, manifest: Manifest, options: ExportOptions) -> MemoryProfile | None:
    """The memory profile, measured by the runtime's own profiler (fresh processes, the runtime's session settings),
    in `options.profile_modes` (None: the profiler's default modes)."""
    try:
        from edgediff.runtime.profile import measure_profile
    except ImportError:
        return None
    if options.profile_modes is None:
        return measure_profile(stage, manifest)
    return measure_profile(stage, manifest, modes=tuple(options.profile_modes))


def parity_inputs(data: RunData, config, options: ExportOptions) -> dict[str, np.ndarray]:
    """Real inputs at `options.parity_timesteps` × every cell: the fp32 parity check's and the --ort check's."""
    return denoiser_inputs(data, config, options.parity_timesteps, images_per_t=4, seed=options.seed + 1,
                           null_fraction=0.25)


def check_out(out: Path, source: Path, overwrite: bool = False) -> None:
    """`write_bundle` replaces `out` wholesale: only ever let it replace an empty folder, or an earlier bundle when
    the user said `--overwrite` (a silent replace once dropped a bundle's int8 file without a word)."""
    o, r = out.resolve(), source.resolve()
    if o != r and o in r.parents or (o == r and not is_bundle(source)):
        raise EdgediffError(f"--out {out} contains the run {source}; choose a separate bundle folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise EdgediffError(f"--out {out} exists and is not an edgediff bundle; choose a new or empty folder")
    if (out / MANIFEST_NAME).is_file() and not overwrite:
        raise EdgediffError(f"--out {out} already holds a bundle; add --overwrite to replace it or choose a new "
                            "folder")


def _check_run(run_dir: Path, out: Path, lut_bytes: int, overwrite: bool) -> None:
    """Refuse a missing run, an impossible LUT size or an unsafe --out before anything is loaded or staged."""
    if not run_dir.is_dir():
        raise EdgediffError(f"RUN_DIR {run_dir} is not a directory; pass the --out folder of 'edgediff train'")
    if lut_bytes < 1:
        raise EdgediffError(f"--lut-bytes {lut_bytes} must be >= 1 (bytes per bank entry, e.g. 8)")
    check_out(out, run_dir, overwrite)


def _stage_fp32(model, config, data: RunData, stage: Path, options: ExportOptions, log: Callable[[str], None]):
    """The fp32 ONNX, checked against torch on real inputs before anything is built on it; returns its path, the
    parity inputs (reused to check an --ort conversion) and the parity figures for the manifest's quality."""
    fp32 = export_onnx(model, config, stage / FILES["denoiser_fp32"])
    inputs = parity_inputs(data, config, options)
    parity = check_parity(model, fp32, inputs)
    log(f"fp32 ONNX: max |ORT - torch| = {parity.max_abs:.2g} over {parity.rows} real inputs "
        f"(t in {parity.timesteps}, every cell)")
    return fp32, inputs, parity.to_dict()


def _stage_lut(bank: np.ndarray | None, lut_bytes: int, stage: Path, seed: int, quality: dict,
               files: dict[str, str], log: Callable[[str], None]) -> LutSpec | None:
    """The bank as a PQ lookup table (its files added to `files`, its fidelity to `quality`); None without a bank:
    the device then uses the null snippet."""
    if bank is None:
        log("no memory bank in this run (--no-memory): the bundle has no LUT, the device uses the null snippet")
        return None
    lut, stats = build_lut(bank, lut_bytes, stage, seed=seed)
    quality.update(stats)
    files["lut_codes"], files["lut_codebooks"] = FILES["lut_codes"], FILES["lut_codebooks"]
    log(f"LUT: {lut.entries} entries × {lut.bytes_per_entry} B (float bank: {4 * lut.dim} B each), "
        f"mean cosine to the float snippets {stats['lut_mean_cosine']:.4f}")
    return lut


def _run_manifest(stage: Path, specs: tuple[list[TensorSpec], list[TensorSpec]], files: dict[str, str], model,
                  config, meta: dict, run_dir: Path, lut: LutSpec | None, quality: dict, sampling: dict) -> Manifest:
    """The manifest of the staged files (no memory profile yet): geometry from the model, tensors (`specs`) from
    its ONNX, sizes and digests from the staged files, and where the weights came from (run, step, data, command)."""
    inputs, outputs = specs
    schedule = config.schedule
    return Manifest(
        schema_version=SCHEMA_VERSION, image_size=config.image_size, channels=config.channels, grid=config.grid,
        patch_size=config.patch_size, snippet_dim=config.snippet_dim, backbone=config.backbone,
        params=count_params(model), schedule=schedule,
        prediction=schedule.prediction, inputs=inputs, outputs=outputs,
        files={role: file_entry(stage, rel) for role, rel in files.items()}, lut=lut, memory_profile=None,
        model_config=config,
        training={"run_dir": str(run_dir.resolve()), "step": int(meta.get("step", 0)),
                  "data": meta.get("train", {}).get("data"), "memory": lut is not None,
                  "settings": meta.get("train", {}), "command": _train_command(meta),
                  "train_seconds": meta.get("train_seconds")},  # wall time to this step (None: not recorded)
        quality=Quality(**quality),
        sampling=sampling,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgediff_version=edgediff.__version__,
        halo=config.halo,
    )


def _add_profile(stage: Path, manifest: Manifest, options: ExportOptions, log: Callable[[str], None]) -> None:
    """Measure the memory profile last, on the staged files themselves, so the planner budgets what ships."""
    log("measuring the memory profile of each denoiser in fresh processes")
    manifest.memory_profile = measure_profile_of(stage, manifest, options)
    if manifest.memory_profile is not None:
        for name, v in manifest.memory_profile.variants.items():
            log(f"memory profile {name}: resident {v.resident_mb:.1f} MiB, activations "
                + ", ".join(f"{k} cell(s) {a:.1f} MiB" for k, a in v.activation_mb.items()))


def _stage_run(stage: Path, run_dir: Path, model, config, meta: dict, data: RunData, bank: np.ndarray | None,
               options: ExportOptions, sampling: dict, log: Callable[[str], None]) -> Manifest:
    """Every file of the bundle in `stage`, in the module docstring's order of trust, and their manifest."""
    fp32, check_inputs, parity = _stage_fp32(model, config, data, stage, options, log)
    quality: dict = {"parity_fp32": parity}
    files = {"denoiser_fp32": FILES["denoiser_fp32"]}
    if options.int8:
        quality["int8"] = build_int8(fp32, stage / FILES["denoiser_int8"], data, config,
                                     meta.get("train", {}).get("data", "emoji"), options, sampling=sampling, log=log)
        files["denoiser_int8"] = FILES["denoiser_int8"]
    lut = _stage_lut(bank, options.lut_bytes, stage, options.seed, quality, files, log)
    specs = tensor_specs(fp32)  # before --ort replaces the .onnx file
    if options.int8_only:
        drop_fp32(stage, files, quality["int8"], log)
    if options.fp16_weights:
        quality["fp16_weights"] = to_fp16_weights(stage, files, check_inputs, log)
    if options.ort_format:
        quality["ort_format"] = to_ort_format(stage, files, check_inputs, log)
    return _run_manifest(stage, specs, files, model, config, meta, run_dir, lut, quality, sampling)


def export_from_run(run_dir: str | Path, out: str | Path, options: ExportOptions = ExportOptions(), *,
                    log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """RUN_DIR (latest checkpoint, EMA weights) → verified bundle at `out`, made as `options` say. Raises
    EdgediffError on any refusal. (`edgediff_export.export_run` is the entry point that also takes a bundle.)"""
    from edgediff.checkpoint import load_ema_model

    run_dir, out = Path(run_dir), Path(out)
    _check_run(run_dir, out, options.lut_bytes, options.overwrite)
    model, config, meta = load_ema_model(run_dir)
    data = load_run_data(run_dir, meta, config, seed=options.seed)
    bank = load_run_bank(run_dir, meta)
    sampling = options.sampling(has_bank=bank is not None, patch=config.geometry.patch)
    stage = staging_dir(out)
    try:
        manifest = _stage_run(stage, run_dir, model, config, meta, data, bank, options, sampling, log)
        if options.profile:
            _add_profile(stage, manifest, options, log)
        write_bundle(out, manifest, stage)
    except OSError as e:  # a full disk or an unwritable --out while writing any bundle file
        shutil.rmtree(stage, ignore_errors=True)
        raise EdgediffError(f"cannot write the bundle at {out}: {e.strerror or e}; free some space or choose a "
                            "writable --out (nothing was written there)") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportResult(out=out, manifest=manifest, messages=[f"bundle written to {out}"])


def drop_fp32(stage: Path, files: dict[str, str], int8_quality: dict | None, log: Callable[[str], None]) -> None:
    """`--int8-only`: remove the staged fp32 denoiser once the int8 file passes the int8 gate against it. Why: the
    smallest bundle and, with weight-only int8 (int8 weights in memory), a peak below fp32's (base_swap.json); the
    evidence stays in quality.int8, the fp32 reference with the run. Refused with the gate's reasons otherwise."""
    from edgediff.int8_gate import int8_failures

    failures = int8_failures(int8_quality)
    if failures:
        raise EdgediffError(f"--int8-only: the int8 denoiser fails its quality gate ({'; '.join(failures)}); export "
                            "without --int8-only, or try --int8-recipe weight-only")
    (stage / files.pop("denoiser_fp32")).unlink()
    log("int8 only: the fp32 denoiser is left out (its int8 file passed the gate against it)")


FP16_MAX_ABS = 0.05  # |Δε| on real inputs above which fp16 storage is refused: a sanity bound that catches a broken
#                     conversion (O(1) errors); seen 1.2e-3 (emoji-32, random inputs) and 8.7e-3 (emoji-128), whose
#                     images stay 49-55 dB PSNR from fp32's (docs/export.md)


def to_fp16_weights(stage: Path, files: dict[str, str], check_inputs: dict[str, np.ndarray],
                    log: Callable[[str], None]) -> dict:
    """Store the staged fp32 denoiser's weights as fp16 (graph_edits.fp16_storage), in place, after checking that
    its outputs on real inputs stay within FP16_MAX_ABS of the float32 file's. Why: half the download and the
    package's size limit, while the graph still computes in fp32 (the casts fold away at load), so the memory
    profile, measured on this file, and the speed stay those of fp32."""
    import onnx

    from edgediff_export.graph_edits import fp16_storage
    from edgediff_export.onnx_export import run_rows, session

    path = stage / files["denoiser_fp32"]
    before = path.stat().st_size
    want = run_rows(session(path), check_inputs)
    onnx.save(fp16_storage(onnx.load(str(path))), str(path))
    err = float(np.abs(run_rows(session(path), check_inputs) - want).max())
    if not err <= FP16_MAX_ABS:
        raise EdgediffError(f"fp16 weights change the denoiser's output by {err:.3g} on real inputs (more than "
                            f"{FP16_MAX_ABS:g}); export without --fp16-weights and report it")
    log(f"fp16 weights: {path.name} {before / MIB:.2f} → {path.stat().st_size / MIB:.2f} MiB, max |Δ| vs fp32 "
        f"{err:.2g}")
    return {"max_abs_vs_fp32": err, "bytes_fp32": before, "bytes": path.stat().st_size}


def to_ort_format(stage: Path, files: dict[str, str], check_inputs: dict[str, np.ndarray],
                  log: Callable[[str], None]) -> dict:
    """Replace each staged denoiser .onnx by its ORT-format file (optimised at ORT_SAVE_LEVEL), in `files` too.

    Why: an ORT-format model holds its weights once fewer after loading (−1.6 to −2.5 MiB on the default model) and
    is what onnxruntime's mobile packages load; but the file is read whole first, so the load phase peaks higher
    (benchmarks/results/lean_loading.json). The profile measures the .ort files, so the planner sees both. Each
    file must give the same outputs as its .onnx on real inputs."""
    import onnxruntime as ort

    from edgediff.runtime.session import OPT_LEVELS
    from edgediff_export.onnx_export import run_rows, session

    worst = 0.0
    for role in [r for r in ("denoiser_fp32", "denoiser_int8") if r in files]:
        src = stage / files[role]
        dst = src.with_suffix(".ort")
        so = ort.SessionOptions()
        so.graph_optimization_level = OPT_LEVELS[ORT_SAVE_LEVEL]
        so.optimized_model_filepath = str(dst)
        so.add_session_config_entry("session.save_model_format", "ORT")
        so.log_severity_level = 3
        want = run_rows(ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]), check_inputs)
        err = float(np.abs(run_rows(session(dst), check_inputs) - want).max())
        if not err <= 1e-4:
            raise EdgediffError(f"the ORT-format {dst.name} differs from {src.name} by {err:.3g} on real inputs; "
                                "export without --ort and report it")
        worst = max(worst, err)
        src.unlink()
        files[role] = dst.name
        log(f"ORT format: {dst.name} ({dst.stat().st_size / MIB:.2f} MiB), max |Δ| vs ONNX {err:.2g}")
    return {"saved_at": ORT_SAVE_LEVEL, "max_abs_vs_onnx": worst}


def build_int8(fp32: Path, dst: Path, data: RunData, config, data_name: str, options: ExportOptions, *,
               sampling: dict, log: Callable[[str], None]) -> dict:
    """Quantise by `options.int8_recipe` on `options`' calibration set, then measure what int8 changes
    (`measure_int8_as_sampled`) unless `options.int8_measure` is off: the manifest's `quality.int8`."""
    from edgediff_export.quantize import quantize_int8

    report = quantize_int8(fp32, dst, data, config, seed=options.seed, recipe=options.int8_recipe,
                           calib_timesteps=options.calib_timesteps, calib_rows=options.calib_rows, log=log)
    if options.int8_measure:
        report.update(measure_int8_as_sampled(fp32, dst, data, config, data_name, options, sampling=sampling,
                                              log=log))
        log_int8(report, log)
    return report


def int8_sampler(sampling: dict) -> dict:
    """What of the bundle's `sampling` record an int8 measurement follows, with the defaults of a record that omits
    them: guidance, DDIM η (sampling.bundle_eta), cell shift and the cascade base (model and strength)."""
    from edgediff.sampling import bundle_eta

    base = sampling.get("base")
    return {"guidance": float(sampling.get("guidance", 1.0)), "eta": float(bundle_eta(None, sampling)),
            "cell_shift": int(sampling.get("cell_shift", 0)),
            "base": {"model": base["model"], "strength": float(base["strength"])} if base else None}


def base_start(sampler: dict, n: int, seed: int, size: int, log: Callable[[str], None]):
    """A cascade's start images for a measurement: the base model's own `n` images with `seed`, drawn by the
    runtime as `edgediff sample` draws them, at this bundle's size (int8_quality.Start; noise without a base)."""
    from edgediff.images import resize, to_float
    from edgediff.runtime.cascade import sample_as_recorded
    from edgediff_export.int8_quality import Start

    base = sampler["base"]
    if base is None:
        return Start()
    log(f"int8: drawing {n} start images with the base {base['model']} (the recorded cascade)")
    images = sample_as_recorded(base["model"], n=n, seed=seed).images
    return Start(images=to_float(resize(images, size)), strength=base["strength"], base=base)


def measure_int8_as_sampled(fp32: Path, int8: Path, data: RunData, config, data_name: str, options: ExportOptions,
                            *, sampling: dict, log: Callable[[str], None]) -> dict:
    """What int8 changes against the `data_name` images (int8_quality.measure_int8), sampled as the bundle's
    `sampling` record says (`int8_sampler`): the int8 gate must judge the sampler `edgediff sample` will run."""
    from edgediff.data import load_dataset
    from edgediff_export.int8_quality import default_metrics, measure_int8

    sampler = int8_sampler(sampling)
    start = base_start(sampler, options.int8_images, options.seed + 29, config.image_size, log)
    log(f"int8: sampling {options.int8_images} images through fp32 and int8 from the same noise (guidance "
        f"{sampler['guidance']:g}, η {sampler['eta']:g}, cell shift {sampler['cell_shift']}), to measure what int8 "
        "changes")
    dataset = load_dataset(data_name, config.image_size)
    return measure_int8(fp32, int8, data, config, metrics=default_metrics(dataset), guidance=sampler["guidance"],
                        eta=sampler["eta"], seed=options.seed, images=options.int8_images, start=start,
                        cell_shift=sampler["cell_shift"])


def int8_sampler_changed(int8_quality: dict | None, sampling: dict) -> bool:
    """Whether a recorded int8 measurement was sampled otherwise than `sampling` now records (`int8_sampler`;
    records from before a field existed were measured without it: η 0, a fixed grid, from noise)."""
    images = (int8_quality or {}).get("images")
    if not images:
        return False
    now = int8_sampler(sampling)
    measured = {"guidance": images.get("guidance", 1.0), "eta": images.get("eta", 0.0),
                "cell_shift": images.get("cell_shift", 0), "base": images.get("base")}
    return measured != now


def log_int8(report: dict, log: Callable[[str], None]) -> None:
    from edgediff.bundle_info import int8_lines

    for line in int8_lines(report):
        log(line)


def _train_command(meta: dict) -> str:
    """The training command that made this checkpoint, with --steps set to the step actually exported."""
    from edgediff.train_config import TrainConfig

    cfg = TrainConfig.from_dict(meta.get("train", {}))
    return cfg.command(steps=int(meta.get("step", cfg.steps)))
