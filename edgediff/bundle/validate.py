"""Validation of a decoded manifest.json: every field is checked for type and range, so a hostile or damaged manifest
is a one-line `BundleError`, never a crash; `parse_manifest` is the only way a `Manifest` is built from a file.

Also holds the manifest to the denoiser file it describes (`check_model_interface`): checksums prove the files are
the ones listed, not that the manifest tells the truth about them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, Field, fields
from pathlib import PurePosixPath
from typing import Any

from edgediff.bundle.manifest import (FILE_ROLES, GEOMETRY_KEYS, MAX_FILE_BYTES, SCHEDULE_KINDS, SCHEMA_VERSION,
                                      BundleError, FileEntry, LutSpec, Manifest, MemoryProfile, Quality, TensorSpec,
                                      VariantProfile)
from edgediff.cells import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, input_specs, output_specs
from edgediff.model_config import ModelConfig
from edgediff.schedule import SHIFT_RANGE, Schedule

def _label(key: Any) -> str:
    """A key taken from the file, fit for a one-line message: plain names as they are, anything else quoted, escaped
    and cut short (a key holding a line break or a record separator would split the error over several lines)."""
    s = str(key)
    if s.isascii() and s.replace("_", "").replace("@", "").isalnum() and len(s) <= 40:
        return s
    return repr(s[:40])


def _need(d: Any, key: str, kind: type | tuple, where: str = "manifest") -> Any:
    if not isinstance(d, dict):
        raise BundleError(f"{where} must be a JSON object; re-export the bundle")
    if key not in d:
        raise BundleError(f"{where} lacks '{_label(key)}'; re-export the bundle with this edgediff version")
    v = d[key]
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BundleError(f"{where}.{_label(key)} must be {name}, got {type(v).__name__}; re-export the bundle")
    return v


def _int(d: Any, key: str, lo: int, hi: int, where: str = "manifest") -> int:
    v = _need(d, key, int, where)
    if not lo <= v <= hi:
        raise BundleError(f"{where}.{_label(key)} = {v} is outside {lo}..{hi}; the bundle is corrupt: re-export it")
    return v


def _num(d: Any, key: str, where: str) -> float:
    v = _need(d, key, (int, float), where)
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 1000:  # math.isfinite would overflow
        v = math.inf
    if isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise BundleError(f"{where}.{_label(key)} = {v!r} must be a finite non-negative number; re-export the bundle")
    return float(v)


def safe_relpath(path: str) -> PurePosixPath:
    """A manifest path must be a plain relative path that stays inside the bundle."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise BundleError(f"bundle file path {path!r} is not a plain relative path; the bundle is unsafe, re-export it")
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or path.startswith("~") or ":" in path:
        raise BundleError(f"bundle file path {path!r} leaves the bundle; refusing it: re-export the bundle")
    return p


def _tensor_specs(items: Any, where: str) -> list[TensorSpec]:
    if not isinstance(items, list) or not items or len(items) > 16:
        raise BundleError(f"manifest.{where} must be a non-empty list; re-export the bundle")
    out = []
    for i, it in enumerate(items):
        w = f"manifest.{where}[{i}]"
        shape = _need(it, "shape", list, w)
        if not all((isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 1 << 16) or s == "batch" for s in shape):
            raise BundleError(f"{w}.shape must hold sizes or 'batch'; re-export the bundle")
        out.append(TensorSpec(name=_need(it, "name", str, w), dtype=_need(it, "dtype", str, w), shape=shape))
    return out


def _profile(d: Any) -> MemoryProfile | None:
    if d is None:
        return None
    w = "manifest.memory_profile"
    variants = {}
    raw = _need(d, "variants", dict, w)
    for name, v in raw.items():
        vw = f"{w}.variants.{_label(name)}"
        acts = _need(v, "activation_mb", dict, vw)
        ms = v.get("ms_per_call", {}) if isinstance(v, dict) else {}
        if not isinstance(ms, dict):
            raise BundleError(f"{vw}.ms_per_call must be an object; re-export the bundle")
        for k in [*acts, *ms]:  # cells per call: the planner does arithmetic on these keys
            if not (k.isascii() and k.isdigit() and len(k) <= 5 and int(k) >= 1):
                raise BundleError(f"{vw}: cells-per-call key {_label(k)} is not a positive integer; re-export the bundle")
        variants[name] = VariantProfile(
            resident_mb=_num(v, "resident_mb", vw),
            activation_mb={str(k): _num(acts, k, f"{vw}.activation_mb") for k in acts},
            ms_per_call={str(k): _num(ms, k, f"{vw}.ms_per_call") for k in ms},
        )
    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise BundleError(f"{w}.settings must be an object; re-export the bundle")
    return MemoryProfile(baseline_mb=_num(d, "baseline_mb", w), variants=variants, settings=settings)


def _sampling(d: dict, patch: int) -> dict:
    """manifest.sampling: only known keys, each range-checked (it steers the sampler, so it is validated too).
    `patch` is the cell side, which bounds the cell shift."""
    from edgediff.cell_shift import check_cell_shift

    unknown = set(d) - {"guidance", "base", "cell_shift", "eta"}
    if unknown:
        raise BundleError(f"manifest.sampling has unknown key {_label(sorted(unknown)[0])}; upgrade edgediff or "
                          "re-export the bundle")
    out = {}
    if "guidance" in d:
        g = d["guidance"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 <= g <= 20:
            raise BundleError("manifest.sampling.guidance must be a number between 0 and 20; re-export the bundle")
        out["guidance"] = float(g)
    if "base" in d:
        out["base"] = _base(d["base"])
    if "cell_shift" in d:
        try:
            out["cell_shift"] = check_cell_shift(d["cell_shift"], patch)
        except ValueError:
            raise BundleError(f"manifest.sampling.cell_shift must be a whole number from 0 to {patch // 2} (half a "
                              "cell); re-export the bundle") from None
    if "eta" in d:
        from edgediff.sampling import check_eta  # the one home of η's range

        e = d["eta"]
        try:
            out["eta"] = check_eta(e if isinstance(e, (int, float)) and not isinstance(e, bool) else "not a number")
        except (ValueError, OverflowError):
            raise BundleError("manifest.sampling.eta must be a number from 0 to 1; re-export the bundle") from None
    return out


def _base(b: Any) -> dict:
    """manifest.sampling.base: the shipped model whose images this bundle redraws (a cascade) and from which share
    of the steps. A name, never a path: no path in a manifest may leave its bundle."""
    from edgediff.shipped import SHIPPED

    if not isinstance(b, dict) or set(b) != {"model", "strength"}:
        raise BundleError("manifest.sampling.base must be an object with exactly 'model' and 'strength'; re-export "
                          "the bundle")
    if b["model"] not in SHIPPED:
        raise BundleError(f"manifest.sampling.base.model {_label(b['model'])} is not a shipped model name "
                          f"({', '.join(SHIPPED)}); re-export the bundle")
    s = b["strength"]
    if not _finite(s) or not 0 < s < 1:
        raise BundleError("manifest.sampling.base.strength must be a number above 0 and below 1; re-export the "
                          "bundle")
    return {"model": b["model"], "strength": float(s)}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _quality_int8(q: Any) -> None:
    """manifest.quality.int8, when present: the figures `info` and the planner's user read must be what they claim
    (numbers where numbers are due). Older bundles carry only some keys (or no int8 at all): those still load."""
    w = "manifest.quality.int8"
    if not isinstance(q, dict):
        raise BundleError(f"{w} must be an object; re-export the bundle")
    for key in ("rel_error_by_band", "x0_rel_error_by_band"):
        bands = q.get(key, {})
        if not isinstance(bands, dict) or not all(_finite(v) and v >= 0 for v in bands.values()):
            raise BundleError(f"{w}.{key} must map timestep bands to non-negative numbers; re-export the bundle")
    for key in ("psnr_vs_fp32_db", "psnr_median_image_db", "rel_error", "max_abs"):
        if key in q and not _finite(q[key]):
            raise BundleError(f"{w}.{key} must be a number; re-export the bundle")
    fd = q.get("fd_delta", {})
    if not isinstance(fd, dict) or not all(
            isinstance(v, dict) and all(_finite(v.get(k)) for k in ("fp32", "int8", "rel")) for v in fd.values()):
        raise BundleError(f"{w}.fd_delta must map each metric to {{fp32, int8, rel}} numbers; re-export the bundle")


def _quality(raw: dict) -> Quality:
    """manifest.quality as a `Quality`: sections are objects, figures are numbers (`info` formats them as such)."""
    q = raw.get("quality", {})
    w = "manifest.quality"
    named = {f.name for f in fields(Quality)} - {"other"}
    for key in ("parity_fp32", "ort_format", "fp16_weights"):
        if key in q and not isinstance(q[key], dict):
            raise BundleError(f"{w}.{key} must be an object; re-export the bundle")
    if not _finite(q.get("parity_fp32", {}).get("max_abs", 0.0)):
        raise BundleError(f"{w}.parity_fp32.max_abs must be a number; re-export the bundle")
    if "int8" in q:
        _quality_int8(q["int8"])
    for key in ("lut_mean_cosine", "lut_bytes_per_entry", "float_bank_bytes_per_entry"):
        if key in q and not _finite(q[key]):
            raise BundleError(f"{w}.{key} must be a number; re-export the bundle")
    return Quality(**{k: v for k, v in q.items() if k in named},
                   other={k: v for k, v in q.items() if k not in named})


def _files(raw: dict) -> dict[str, FileEntry]:
    """manifest.files: known roles only, real sha256 digests, safe relative paths, and the fp32 denoiser present
    (every plan falls back to it)."""
    files = {}
    for role, entry in _need(raw, "files", dict).items():
        if role not in FILE_ROLES:
            raise BundleError(f"manifest.files has unknown role {role!r}; upgrade edgediff or re-export the bundle")
        w = f"manifest.files.{role}"
        sha = _need(entry, "sha256", str, w)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BundleError(f"{w}.sha256 is not a sha256 hex digest; re-export the bundle")
        files[role] = FileEntry(path=str(safe_relpath(_need(entry, "path", str, w))), sha256=sha,
                                bytes=_int(entry, "bytes", 0, MAX_FILE_BYTES, w))
    if "denoiser_fp32" not in files and "denoiser_int8" not in files:
        raise BundleError("manifest.files lacks a denoiser (denoiser_fp32 or denoiser_int8); re-export the bundle")
    return files


def _lut(raw: dict, files: dict[str, FileEntry]) -> LutSpec | None:
    """manifest.lut (None without a bank): a product-quantizer layout the decoder can split, whose files exist."""
    if raw.get("lut") is None:
        return None
    w = "manifest.lut"
    lut = LutSpec(entries=_int(raw["lut"], "entries", 1, 1 << 31, w), dim=_int(raw["lut"], "dim", 1, 1 << 16, w),
                  subvectors=_int(raw["lut"], "subvectors", 1, 1 << 16, w),
                  centroids=_int(raw["lut"], "centroids", 1, 256, w))
    if lut.dim % lut.subvectors:
        raise BundleError(f"manifest.lut: dim {lut.dim} is not divisible by {lut.subvectors} subvectors")
    if not {"lut_codes", "lut_codebooks"} <= files.keys():
        raise BundleError("manifest.lut is set but files lack lut_codes / lut_codebooks; re-export the bundle")
    return lut


def _schedule(raw: dict) -> Schedule:
    """manifest.schedule: a kind edgediff.schedule.Schedule can rebuild on the device, with a sane T, predicting
    what the top-level `prediction` says (older and hand-made manifests leave it out of the schedule)."""
    w = "manifest.schedule"
    schedule = _need(raw, "schedule", dict)
    kind = _need(schedule, "kind", str, w)
    steps = _int(schedule, "num_train_timesteps", 1, 100000, w)
    if kind not in SCHEDULE_KINDS:
        raise BundleError(f"manifest.schedule.kind {kind[:40]!r} is unknown to this edgediff (it knows "
                          f"{', '.join(SCHEDULE_KINDS)}); upgrade edgediff or re-export the bundle")
    prediction = _need(raw, "prediction", str)
    if "prediction" in schedule and _need(schedule, "prediction", str, w) != prediction:
        raise BundleError(f"{w}.prediction {_label(schedule['prediction'])} != manifest.prediction "
                          f"{_label(prediction)}; the bundle is inconsistent: re-export it")
    shift = 1.0
    if "shift" in schedule:
        shift = schedule["shift"]
        low, high = SHIFT_RANGE
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not low <= shift <= high:
            raise BundleError(f"{w}.shift must be a number in {low:g}..{high:g}, got {_label(shift)}; re-export "
                              "the bundle")
    return Schedule(kind=kind, num_train_timesteps=steps, prediction=prediction, shift=float(shift))


def _geometry(raw: dict) -> dict[str, Any]:
    """The top-level geometry (GEOMETRY_KEYS and patch_size), consistent with itself: the sampler tiles the image
    with grid² cells of patch_size, each seen with a halo of at most a cell."""
    image_size = _int(raw, "image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    grid = _int(raw, "grid", 1, 256)
    patch = _int(raw, "patch_size", 1, MAX_IMAGE_SIZE)
    if grid * patch != image_size:
        raise BundleError(f"manifest grid {grid} × patch {patch} != image size {image_size}; re-export the bundle")
    return {"image_size": image_size, "channels": _int(raw, "channels", 1, 4), "grid": grid, "patch_size": patch,
            "snippet_dim": _int(raw, "snippet_dim", 1, 1 << 16), "backbone": _need(raw, "backbone", str),
            "halo": _int(raw, "halo", 0, patch) if "halo" in raw else 0}


def _model_value(mc: dict, f: Field, w: str) -> None:
    """One key of manifest.model_config, held to the type of its ModelConfig default."""
    default = f.default_factory() if f.default is MISSING else f.default
    if isinstance(default, tuple):
        v = _need(mc, f.name, list, w)
        if not 1 <= len(v) <= 16 or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64 for x in v):
            raise BundleError(f"{w}.{f.name} must list 1 to 16 integers in 1..64; re-export the bundle")
    elif isinstance(default, bool):
        _need(mc, f.name, bool, w)
    elif isinstance(default, int):
        _int(mc, f.name, 0, 1 << 20, w)
    else:
        _need(mc, f.name, type(default), w)


def _model_config(raw: dict, geometry: dict[str, Any]) -> ModelConfig | None:
    """manifest.model_config as the `ModelConfig` export wrote, each key of its type; its geometry must be the top
    level's (a key it lacks, as in older bundles, is taken from there); keys ModelConfig does not know are dropped,
    as a checkpoint's are. Absent or {} (hand-made bundles): None."""
    mc = raw.get("model_config", {})
    if not mc:
        return None
    w = "manifest.model_config"
    for f in fields(ModelConfig):
        if f.name in mc:
            _model_value(mc, f, w)
    for key in GEOMETRY_KEYS:
        if key in mc and mc[key] != geometry[key]:
            raise BundleError(f"{w}.{key} = {_label(mc[key])} but manifest.{key} = {_label(geometry[key])}; the "
                              "bundle's two records of its geometry disagree: re-export it")
    return ModelConfig.from_dict({**mc, **{k: geometry[k] for k in GEOMETRY_KEYS}})


def parse_manifest(raw: Any) -> Manifest:
    """Validate a decoded manifest.json and build the `Manifest`; any problem is a `BundleError`."""
    if not isinstance(raw, dict):
        raise BundleError("manifest.json must hold a JSON object; re-export the bundle")
    version = _need(raw, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {version} is not supported (this edgediff reads {SCHEMA_VERSION}); "
            "upgrade edgediff or re-export the bundle"
        )
    geometry = _geometry(raw)
    files = _files(raw)
    lut = _lut(raw, files)
    schedule = _schedule(raw)
    for key in ("model_config", "training", "quality", "sampling"):
        if not isinstance(raw.get(key, {}), dict):
            raise BundleError(f"manifest.{key} must be an object; re-export the bundle")
    manifest = Manifest(
        schema_version=version,
        **geometry,
        params=_int(raw, "params", 0, 1 << 40),
        schedule=schedule,
        prediction=schedule.prediction,
        inputs=_tensor_specs(raw.get("inputs"), "inputs"),
        outputs=_tensor_specs(raw.get("outputs"), "outputs"),
        files=files,
        lut=lut,
        memory_profile=_profile(raw.get("memory_profile")),
        training=raw.get("training", {}),
        quality=_quality(raw),
        sampling=_sampling(raw.get("sampling", {}), geometry["image_size"] // geometry["grid"]),
        created=str(raw.get("created", "")),
        edgediff_version=str(raw.get("edgediff_version", "")),
    )
    _check_interface(manifest)
    manifest.model_config = _model_config(raw, geometry)  # after the interface: its refusals say more
    if manifest.model_config is not None and manifest.model_config.schedule_shift != schedule.shift:
        raise BundleError(f"manifest.model_config.schedule_shift = {manifest.model_config.schedule_shift:g} but "
                          f"manifest.schedule.shift = {schedule.shift:g}; the network would be sampled under a "
                          "schedule it was not trained with: re-export the bundle")
    return manifest


def expected_interface(m: Manifest) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """(dtype, shape) of each input in the sampler's feeding order, and of the output: what the geometry fields
    imply the denoiser must take and give (edgediff.cells is the one definition)."""
    strip = lambda specs: [(dtype, shape) for _, dtype, shape in specs]  # noqa: E731
    return strip(input_specs(m.geometry, m.snippet_dim)), strip(output_specs(m.geometry))


def _check_interface(m: Manifest) -> None:
    """The tensor specs must agree with the geometry, or the sampler would feed arrays the model cannot take."""
    def fmt(spec) -> str:
        return "nothing" if spec is None else f"{_label(spec[0])}[{', '.join(map(str, spec[1]))}]"

    want_in, want_out = expected_interface(m)
    for where, specs, want in (("inputs", m.inputs, want_in), ("outputs", m.outputs, want_out)):
        for i, (got, exp) in enumerate(itertools.zip_longest([(t.dtype, t.shape) for t in specs], want)):
            if got != exp:
                raise BundleError(f"manifest.{where}[{i}] is {fmt(got)} but its image size, grid, halo, channels and "
                                  f"snippet_dim imply {fmt(exp)}; the bundle is corrupt: re-export it")
    names = [t.name for t in m.inputs]
    if len(set(names)) != len(names):
        raise BundleError("manifest.inputs repeat a name; the bundle is corrupt: re-export it")
    if m.lut is not None and m.lut.dim != m.snippet_dim:
        raise BundleError(f"manifest.lut.dim {m.lut.dim} != snippet_dim {m.snippet_dim}; re-export the bundle")


def check_model_interface(manifest: Manifest, inputs, outputs) -> None:
    """Hold the denoiser file to its manifest: `inputs` / `outputs` are onnxruntime NodeArgs (name, shape, type).

    Checksums prove the files are the ones the manifest lists, not that the manifest tells the truth about them;
    a manifest edited by hand (channels, grid, names) would otherwise surface as onnxruntime's multi-line error
    in the middle of sampling."""
    ort_types = {"float32": "tensor(float)", "int64": "tensor(int64)"}

    def same(spec: TensorSpec, arg) -> bool:
        dims = list(arg.shape)
        return (arg.type == ort_types.get(spec.dtype) and len(dims) == len(spec.shape)
                and all((s == "batch" and not isinstance(d, int)) or s == d for s, d in zip(spec.shape, dims)))

    for where, specs, args in (("input", manifest.inputs, inputs), ("output", manifest.outputs, outputs)):
        by_name = {a.name: a for a in args}
        for spec in specs:
            arg = by_name.get(spec.name)
            if arg is None or not same(spec, arg):
                found = "missing" if arg is None else f"{arg.type}{list(arg.shape)}"
                raise BundleError(f"the bundle's denoiser does not match its manifest ({where} {_label(spec.name)}: "
                                  f"manifest {spec.dtype}{spec.shape}, model {found}); re-export the bundle")
        if where == "input" and len(args) != len(specs):
            extra = sorted(set(by_name) - {s.name for s in specs})
            raise BundleError(f"the bundle's denoiser takes inputs the manifest does not list ({_label(extra)}); "
                              "re-export the bundle")
