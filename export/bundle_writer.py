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
from edgediff.bundle import (SCHEMA_VERSION, LutSpec, Manifest, MemoryProfile, TensorSpec, file_entry, staging_dir,
                             write_bundle)
from edgediff.errors import EdgediffError
from edgediff.images import atomic_write_bytes
from edgediff.lut import mean_cosine, train_pq
from edgediff.sampling import resolve_guidance
from edgediff.schedule import Schedule
from edgediff_export.inputs import denoiser_inputs, load_run_bank, load_run_data
from edgediff_export.onnx_export import PARITY_TIMESTEPS, check_parity, export_onnx

FILES = {"denoiser_fp32": "denoiser.onnx", "denoiser_int8": "denoiser.int8.onnx",
         "lut_codes": "lut_codes.npy", "lut_codebooks": "lut_codebooks.npy"}
DEFAULT_LUT_BYTES = 8
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    messages: list[str] = field(default_factory=list)


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


def measure_profile_hook(stage: Path, manifest: Manifest) -> MemoryProfile | None:
    """The memory profile, measured by the runtime's own profiler (fresh processes, the runtime's session settings)."""
    try:
        from edgediff.runtime.profile import measure_profile
    except ImportError:
        return None
    return measure_profile(stage, manifest)


def check_out(out: Path, run_dir: Path) -> None:
    """`write_bundle` replaces `out` wholesale: only ever let it replace an earlier bundle or an empty folder."""
    o, r = out.resolve(), run_dir.resolve()
    if o == r or o in r.parents:
        raise EdgediffError(f"--out {out} contains the run {run_dir}; choose a separate bundle folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise EdgediffError(f"--out {out} exists and is not an edgediff bundle; choose a new or empty folder")


def export_run(run_dir: str | Path, out: str | Path, *, int8: bool = False, lut_bytes: int = DEFAULT_LUT_BYTES,
               profile: bool = True, seed: int = 0, guidance: float | None = None,
               log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """RUN_DIR (latest checkpoint, EMA weights) → verified bundle at `out`. Raises EdgediffError on any refusal."""
    from edgediff.checkpoint import load_ema_model

    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise EdgediffError(f"RUN_DIR {run_dir} is not a directory; pass the --out folder of 'edgediff train'")
    if lut_bytes < 1:
        raise EdgediffError(f"--lut-bytes {lut_bytes} must be >= 1 (bytes per bank entry, e.g. 8)")
    check_out(out, run_dir)
    model, config, meta = load_ema_model(run_dir)
    data = load_run_data(run_dir, meta, config, seed=seed)
    bank = load_run_bank(run_dir, meta)
    sampling = {} if guidance is None else {"guidance": resolve_guidance(guidance, has_bank=bank is not None)}
    stage = staging_dir(out)
    messages: list[str] = []
    try:
        fp32 = export_onnx(model, config, stage / FILES["denoiser_fp32"])
        parity_inputs = denoiser_inputs(data, config, PARITY_TIMESTEPS, images_per_t=4, seed=seed + 1,
                                        null_fraction=0.25)
        parity = check_parity(model, fp32, parity_inputs)
        log(f"fp32 ONNX: max |ORT - torch| = {parity.max_abs:.2g} over {parity.rows} real inputs "
            f"(t in {parity.timesteps}, every cell)")
        quality: dict = {"parity_fp32": parity.to_dict()}
        files = {"denoiser_fp32": FILES["denoiser_fp32"]}
        if int8:
            from edgediff_export.quantize import quantize_int8

            report = quantize_int8(fp32, stage / FILES["denoiser_int8"], data, config, parity_inputs, seed=seed)
            quality["int8"] = report
            files["denoiser_int8"] = FILES["denoiser_int8"]
            log(f"int8 ONNX ({report['method']}): relative error vs fp32 {report['rel_error']:.3%}, "
                f"max abs {report['max_abs']:.3g}")
        lut = None
        if bank is not None:
            lut, stats = build_lut(bank, lut_bytes, stage, seed=seed)
            quality.update(stats)
            files["lut_codes"], files["lut_codebooks"] = FILES["lut_codes"], FILES["lut_codebooks"]
            log(f"LUT: {lut.entries} entries × {lut.bytes_per_entry} B (float bank: {4 * lut.dim} B each), "
                f"mean cosine to the float snippets {stats['lut_mean_cosine']:.4f}")
        else:
            log("no memory bank in this run (--no-memory): the bundle has no LUT, the device uses the null snippet")
        inputs, outputs = tensor_specs(fp32)
        schedule = Schedule()
        manifest = Manifest(
            schema_version=SCHEMA_VERSION, image_size=config.image_size, channels=config.channels, grid=config.grid,
            patch_size=config.patch_size, snippet_dim=config.snippet_dim, backbone=config.backbone,
            params=int(sum(p.numel() for p in model.parameters())), schedule=schedule.to_dict(),
            prediction=schedule.prediction, inputs=inputs, outputs=outputs,
            files={role: file_entry(stage, rel) for role, rel in files.items()}, lut=lut, memory_profile=None,
            model_config=config.to_dict(),
            training={"run_dir": str(run_dir.resolve()), "step": int(meta.get("step", 0)),
                      "data": meta.get("train", {}).get("data"), "memory": bank is not None,
                      "settings": meta.get("train", {}), "command": _train_command(meta)},
            quality=quality,
            sampling=sampling,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            edgediff_version=edgediff.__version__,
            halo=config.halo,
        )
        if profile:
            manifest.memory_profile = measure_profile_hook(stage, manifest)
            if manifest.memory_profile is not None:
                for name, v in manifest.memory_profile.variants.items():
                    log(f"memory profile {name}: resident {v.resident_mb:.1f} MiB, activations "
                        + ", ".join(f"{k} cell(s) {a:.1f} MiB" for k, a in v.activation_mb.items()))
        write_bundle(out, manifest, stage)
    except OSError as e:  # a full disk or an unwritable --out while writing any bundle file
        shutil.rmtree(stage, ignore_errors=True)
        raise EdgediffError(f"cannot write the bundle at {out}: {e.strerror or e}; free some space or choose a "
                            "writable --out (nothing was written there)") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    messages.append(f"bundle written to {out}")
    return ExportResult(out=out, manifest=manifest, messages=messages)


def _train_command(meta: dict) -> str:
    """The training command that made this checkpoint, with --steps set to the step actually exported."""
    from edgediff.train import TrainConfig

    known = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in meta.get("train", {}).items() if k in known})
    return cfg.command(steps=int(meta.get("step", cfg.steps)))
