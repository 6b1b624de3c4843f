"""Test bundles for the runtime: a tiny *untrained* denoiser exported with export's own functions.

Untrained UNets start with zero-initialised output convolutions (eps = 0 everywhere), which would make every
comparison trivially true; `perturb` gives those weights small random values so the images depend on the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def perturb(model, seed: int = 0, scale: float = 0.05) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def untrained_bundle(out: Path, *, image_size: int = 16, grid: int = 2, dim: int = 8, mults=(1, 2),
                     snippet_dim: int = 8, entries: int = 16, lut_bytes: int = 4, profile_modes=("lean",),
                     seed: int = 0, halo: int = 0):
    """(bundle_dir, torch model, config): ONNX through export_onnx, LUT through build_lut, manifest through
    write_bundle, memory profile through the runtime's profiler, exactly as `edgediff export` assembles them."""
    import torch

    from edgediff.bundle import SCHEMA_VERSION, Manifest, file_entry, staging_dir, write_bundle
    from edgediff.models import ModelConfig, build_model
    from edgediff.runtime.profile import measure_profile
    from edgediff.schedule import Schedule
    from edgediff_export.bundle_writer import FILES, build_lut, tensor_specs
    from edgediff_export.onnx_export import export_onnx

    torch.manual_seed(seed)
    config = ModelConfig(image_size=image_size, grid=grid, dim=dim, mults=tuple(mults), snippet_dim=snippet_dim,
                         halo=halo)
    model = build_model(config).eval()
    perturb(model, seed)
    stage = staging_dir(out)
    export_onnx(model, config, stage / FILES["denoiser_fp32"])
    bank = np.random.default_rng(seed).standard_normal((entries, snippet_dim)).astype(np.float32)
    bank *= np.sqrt(snippet_dim) / np.linalg.norm(bank, axis=1, keepdims=True)
    lut, _ = build_lut(bank, lut_bytes, stage, seed=seed)
    files = {role: FILES[role] for role in ("denoiser_fp32", "lut_codes", "lut_codebooks")}
    inputs, outputs = tensor_specs(stage / FILES["denoiser_fp32"])
    schedule = Schedule()
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, image_size=image_size, channels=config.channels, grid=grid,
        patch_size=config.patch_size, snippet_dim=snippet_dim, backbone="unet",
        params=int(sum(p.numel() for p in model.parameters())), schedule=schedule,
        prediction=schedule.prediction, inputs=inputs, outputs=outputs,
        files={role: file_entry(stage, rel) for role, rel in files.items()}, lut=lut, memory_profile=None,
        model_config=config, halo=halo,
    )
    if profile_modes:
        manifest.memory_profile = measure_profile(stage, manifest, modes=tuple(profile_modes))
    write_bundle(out, manifest, stage)
    return Path(out), model, config
