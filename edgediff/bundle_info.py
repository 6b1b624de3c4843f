"""`edgediff info BUNDLE_DIR`: a bundle's manifest, readably, after the same checks the device makes.

Device side (no torch): it goes through `open_bundle`, so a bundle that `info` prints is one the runtime would
accept, and a bad one fails here with the same one-line error.
"""

from __future__ import annotations

from pathlib import Path

from edgediff.bundle import Manifest, open_bundle

MIB = float(1 << 20)


def _mb(n: int) -> str:
    return f"{n / MIB:.2f} MiB" if n >= 1 << 16 else f"{n / 1024:.1f} KiB"


def describe(manifest: Manifest, bundle_dir: str | Path = "") -> str:
    """Multi-line human summary of a validated manifest."""
    m = manifest
    lines = [
        f"bundle        {bundle_dir}  (schema v{m.schema_version}, edgediff {m.edgediff_version or '?'}, "
        f"created {m.created or '?'})",
        f"image         {m.image_size}×{m.image_size}×{m.channels}, grid {m.grid}×{m.grid} = {m.num_cells} cells of "
        f"{m.patch_size}×{m.patch_size}"
        + (f", each seen with a {m.halo} px halo of its neighbours ({m.geometry.side}×{m.geometry.side} input)"
           if m.halo else ", each seen alone (no halo)"),
        f"model         {m.backbone}, {m.params:,} parameters, snippet dim {m.snippet_dim}",
        f"schedule      {m.schedule.get('kind')}, T = {m.schedule.get('num_train_timesteps')}, "
        f"prediction {m.prediction}",
    ]
    cfg = m.model_config
    if cfg:
        lines.append("model config  " + ", ".join(f"{k}={cfg[k]}" for k in ("dim", "mults", "num_res_blocks",
                                                                            "depth") if k in cfg))
    lines.append("inputs        " + "; ".join(f"{t.name} {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.inputs))
    lines.append("outputs       " + "; ".join(f"{t.name} {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.outputs))
    lines.append("files         (sizes and sha256 verified)")
    for role, f in m.files.items():
        lines.append(f"  {role:<15} {f.path:<22} {_mb(f.bytes):>12}  sha256 {f.sha256[:16]}…")
    if m.lut is None:
        lines.append("memory bank   none (trained without memory): samples use the null snippet")
    else:
        lut = m.lut
        lines.append(
            f"memory bank   PQ lookup table: {lut.entries:,} entries × {lut.bytes_per_entry} B codes "
            f"({lut.subvectors} sub-vectors × {lut.centroids} centroids of {lut.dim // lut.subvectors} dims; "
            f"float bank would be {4 * lut.dim} B/entry)"
        )
        g = m.sampling.get("guidance", 1.0)
        lines.append(f"sampling      memory-bank guidance {g:g} by default"
                     + (" (none)" if g == 1.0 else " (each cell evaluated with and without its snippet)"))
    q = m.quality
    if q:
        parts = []
        if "parity_fp32" in q:
            parts.append(f"fp32 vs torch max abs {q['parity_fp32'].get('max_abs', float('nan')):.2g}")
        if "int8" in q:
            i8 = q["int8"]
            parts.append(f"int8 vs fp32 rel error {i8.get('rel_error', float('nan')):.2%} ({i8.get('method')}, "
                         f"preset {i8.get('preset')})")
        if "lut_mean_cosine" in q:
            parts.append(f"LUT mean cosine {q['lut_mean_cosine']:.4f}")
        for k, v in q.items():
            if k.startswith("fd_lite0"):
                parts.append(f"{k} {v:.3f}" if isinstance(v, (int, float)) else f"{k} {v}")
        lines.append("quality       " + "; ".join(parts))
    p = m.memory_profile
    if p is None:
        lines.append("memory        not profiled (export with the profile to let the planner budget exactly)")
    else:
        lines.append(f"memory        baseline {p.baseline_mb:.1f} MiB (interpreter + numpy + onnxruntime)")
        for name, v in p.variants.items():
            acts = ", ".join(f"{k} cell{'s' if k != '1' else ''} {a:.1f}" for k, a in v.activation_mb.items())
            ms = ", ".join(f"{k}: {t:.2f}" for k, t in v.ms_per_call.items())
            lines.append(f"  {name:<6} resident {v.resident_mb:.1f} MiB; activations MiB per call: {acts}"
                         + (f"; ms per call: {ms}" if ms else ""))
        if p.settings:
            lines.append("  measured with " + ", ".join(f"{k}={v}" for k, v in p.settings.items()))
    t = m.training
    if t:
        lines.append(f"training      step {t.get('step')}, data {t.get('data')}, memory bank {t.get('memory')}")
    return "\n".join(lines)


def bundle_info(bundle_dir: str | Path | None = None) -> str:
    """Validate (schema, paths, sizes, sha256) and describe; raises BundleError on a bundle the device would refuse.
    None: the default bundle shipped in the package (what `edgediff sample` uses without a BUNDLE_DIR)."""
    if bundle_dir is None:
        from edgediff.runtime.sampler import resolve_bundle

        bundle_dir = resolve_bundle(None)
    manifest = open_bundle(bundle_dir)
    return describe(manifest, bundle_dir)
