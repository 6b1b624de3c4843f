"""`edgediff info BUNDLE_DIR`: a bundle's manifest, readably, after the same checks the device makes.

Device side (no torch): it goes through `open_bundle`, so a bundle that `info` prints is one the runtime would
accept, and a bad one fails here with the same one-line error.
"""

from __future__ import annotations

from pathlib import Path

from edgediff.bundle import Manifest, MemoryProfile, Quality, open_bundle, resolve_bundle
from edgediff.int8_gate import verdict
from edgediff.units import MIB



def _mb(n: int) -> str:
    return f"{n / MIB:.2f} MiB" if n >= 1 << 16 else f"{n / 1024:.1f} KiB"


def _measured_start(images: dict) -> str:
    """How an int8 measurement's images started, where not from noise on a fixed grid."""
    shift, base = images.get("cell_shift", 0), images.get("base")
    return ((f", cell shift {shift}" if shift else "")
            + (f", redrawing {base['model']}'s images from strength {base['strength']:g}" if base else ""))


def int8_lines(q: dict) -> list[str]:
    """What int8 changes, as `export` and `info` print it: ε error per timestep band, the x₀ error it causes, and the
    images (PSNR against fp32 from the same noise and snippets, each quality metric's change). Older bundles
    carry only a pooled ε error: that is printed instead."""
    kept = len(q.get("fp32_conv_names") or [])
    how = (f"int8 ({q.get('recipe', 'static')}, {q.get('method')}, preset {q.get('preset', '-')}"
           + (f", {kept} most sensitive convs fp32" if kept else "") + ")")
    bands = q.get("rel_error_by_band")
    if not bands:
        return [f"{how}: ε rel error vs fp32 {q.get('rel_error', float('nan')):.2%} (pooled over t)"]
    lines = [f"{how}: ε rel error by t band " + ", ".join(f"{b} {v:.1%}" for b, v in bands.items())]
    x0 = q.get("x0_rel_error_by_band", {})
    if x0:
        lines.append("  x0 rel error by t band " + ", ".join(f"{b} {v:.1%}" for b, v in x0.items()))
    if "psnr_vs_fp32_db" in q:
        im = q.get("images", {})
        lines.append(f"  images vs fp32 (same noise and snippets, {im.get('n', '?')} images, "
                     f"{im.get('ddim_steps', '?')} steps, guidance {im.get('guidance', '?')}, η {im.get('eta', 0.0):g}"
                     f"{_measured_start(im)}): PSNR {q['psnr_vs_fp32_db']:.1f} dB (median image "
                     f"{q.get('psnr_median_image_db', float('nan')):.1f} dB), mean |Δ| "
                     f"{q.get('mean_abs_diff_255', float('nan')):.1f}/255")
    for name, d in q.get("fd_delta", {}).items():
        lines.append(f"  {name}: fp32 {d['fp32']:.2f} → int8 {d['int8']:.2f} ({d['rel']:+.1%})")
    return lines + ["  " + verdict(q)]


def _model_lines(m: Manifest, bundle_dir: str | Path) -> list[str]:
    """What the bundle is: its origin, the image and cell geometry, the model, the schedule and the tensors."""
    lines = [
        f"bundle        {bundle_dir}  (schema v{m.schema_version}, edgediff {m.edgediff_version or '?'}, "
        f"created {m.created or '?'})",
        f"image         {m.image_size}×{m.image_size}×{m.channels}, grid {m.grid}×{m.grid} = {m.num_cells} cells of "
        f"{m.patch_size}×{m.patch_size}"
        + (f", each seen with a {m.halo} px halo of its neighbours ({m.geometry.side}×{m.geometry.side} input)"
           if m.halo else ", each seen alone (no halo)"),
        f"model         {m.backbone}, {m.params:,} parameters, snippet dim {m.snippet_dim}",
        f"schedule      {m.schedule.kind}, T = {m.schedule.num_train_timesteps}, "
        f"prediction {m.prediction}" + (f", SNR shifted by {m.schedule.shift:g}²" if m.schedule.shift != 1 else ""),
    ]
    cfg = {} if m.model_config is None else m.model_config.to_dict()
    if cfg:
        lines.append("model config  " + ", ".join(f"{k}={cfg[k]}" for k in ("dim", "mults", "num_res_blocks",
                                                                            "depth") if k in cfg))
    lines.append("inputs        " + "; ".join(f"{t.name} {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.inputs))
    lines.append("outputs       " + "; ".join(f"{t.name} {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.outputs))
    lines.append("files         (sizes and sha256 verified)")
    for role, f in m.files.items():
        lines.append(f"  {role:<15} {f.path:<22} {_mb(f.bytes):>12}  sha256 {f.sha256[:16]}…")
    return lines


def _bank_lines(m: Manifest) -> list[str]:
    """The memory bank (or its absence: samples then use the null snippet) and the guidance it is sampled with."""
    if m.lut is None:
        return ["memory bank   none (trained without memory): samples use the null snippet"]
    lut = m.lut
    g = m.sampling.get("guidance", 1.0)
    return [
        f"memory bank   PQ lookup table: {lut.entries:,} entries × {lut.bytes_per_entry} B codes "
        f"({lut.subvectors} sub-vectors × {lut.centroids} centroids of {lut.dim // lut.subvectors} dims; "
        f"float bank would be {4 * lut.dim} B/entry)",
        f"sampling      memory-bank guidance {g:g} by default"
        + (" (none)" if g == 1.0 else " (each cell evaluated with and without its snippet)"),
    ]


def _cascade_lines(m: Manifest) -> list[str]:
    """The recorded base stage and cell shift, if any: `sample` uses them unless told --base none / --cell-shift 0."""
    lines, base, shift = [], m.sampling.get("base"), m.sampling.get("cell_shift", 0)
    if base is not None:
        lines.append(f"cascade       sample first draws with {base['model']}, then this bundle redraws those images "
                     f"from {base['strength']:.0%} of the steps (--base none: draw from noise)")
    if shift:
        lines.append(f"cell shift    the grid moves up to {shift} px each way at every step (--cell-shift 0: a fixed "
                     "grid)")
    if m.sampling.get("eta"):
        lines.append(f"eta           {m.sampling['eta']:g}: fresh noise at every DDIM step (--eta 0: deterministic DDIM)")
    return lines


def _quality_lines(q: Quality) -> list[str]:
    """The quality measured at export (parity with torch, LUT fidelity, FD-Lite0, int8 per band), if any."""
    if not q.to_dict():
        return []
    parts = []
    if q.parity_fp32 is not None:
        parts.append(f"fp32 vs torch max abs {q.parity_fp32.get('max_abs', float('nan')):.2g}")
    if q.fp16_weights is not None:
        parts.append(f"fp32 weights stored as fp16 (max abs change {q.fp16_weights.get('max_abs_vs_fp32', float('nan')):.2g})")
    if q.lut_mean_cosine is not None:
        parts.append(f"LUT mean cosine {q.lut_mean_cosine:.4f}")
    for k, v in q.other.items():  # older bundles recorded FD-Lite0 at export
        if k.startswith("fd_lite0"):
            parts.append(f"{k} {v:.3f}" if isinstance(v, (int, float)) else f"{k} {v}")
    lines = ["quality       " + "; ".join(parts)]
    if q.int8 is not None:
        lines += ["  " + line for line in int8_lines(q.int8)]
    return lines


def _memory_lines(p: MemoryProfile | None) -> list[str]:
    """The measured memory profile the planner budgets with, or a hint that the bundle lacks one."""
    if p is None:
        return ["memory        not profiled (export with the profile to let the planner budget exactly)"]
    lines = [f"memory        baseline {p.baseline_mb:.1f} MiB (interpreter + numpy + onnxruntime)"]
    for name, v in p.variants.items():
        acts = ", ".join(f"{k} cell{'s' if k != '1' else ''} {a:.1f}" for k, a in v.activation_mb.items())
        ms = ", ".join(f"{k}: {t:.2f}" for k, t in v.ms_per_call.items())
        lines.append(f"  {name:<6} resident {v.resident_mb:.1f} MiB; activations MiB per call: {acts}"
                     + (f"; ms per call: {ms}" if ms else ""))
    if p.settings:
        lines.append("  measured with " + ", ".join(f"{k}={v}" for k, v in p.settings.items()))
    return lines


def describe(manifest: Manifest, bundle_dir: str | Path = "") -> str:
    """Multi-line human summary of a validated manifest."""
    m = manifest
    lines = _model_lines(m, bundle_dir) + _bank_lines(m) + _cascade_lines(m) + _quality_lines(m.quality) + _memory_lines(m.memory_profile)
    t = m.training
    if t:
        lines.append(f"training      step {t.get('step')}, data {t.get('data')}, memory bank {t.get('memory')}")
    return "\n".join(lines)


def bundle_info(bundle_dir: str | Path | None = None) -> str:
    """Validate (schema, paths, sizes, sha256) and describe; raises BundleError on a bundle the device would refuse.
    None: the default bundle shipped in the package (what `edgediff sample` uses without a BUNDLE_DIR)."""
    from edgediff.shipped import listing

    shown = resolve_bundle(bundle_dir)
    manifest = open_bundle(shown)
    return describe(manifest, shown) + ("\n" + listing() if bundle_dir is None else "")
