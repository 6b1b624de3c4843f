"""Everything an export can be told, as one value: `ExportOptions`, and the defaults it starts from.

Why one value instead of module globals: a caller that wants a cheaper export (a benchmark calibrating a 512 px
model on a few rows, a test skipping the profile) says so in the call, and the next export in the same process is
unaffected; before, benchmarks patched `quantize.CALIB_TIMESTEPS` and friends and every later export inherited it.
The CLI builds an `ExportOptions` from its flags; `export_run` / `rebundle` hand it down to each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_LUT_BYTES = 8
DEFAULT_RECIPE = "diffusion"  # every int8 lever that paid on the default model (quantize.RECIPES)
# the int8 calibration set: real inputs at these timesteps × every cell, at most CALIB_ROWS rows (quantize.py)
CALIB_TIMESTEPS = tuple(int(t) for t in np.linspace(999, 0, 32).round().astype(np.int64))
CALIB_ROWS = 1024
# the fp32 ONNX is checked against torch at these timesteps × every cell (onnx_export.check_parity)
PARITY_TIMESTEPS = (999, 800, 600, 400, 200, 50, 0)
# images int8 and fp32 sample from the same noise to measure what int8 changes (int8_quality.measure_int8); the
# ship gate (edgediff/int8_gate.py) reads the FD changes they give. On the default model 64 images said
# FD-independent +2.3% where 256 said +4.3%: FD's small-sample bias hides a real shift, so the default is 256.
INT8_IMAGES = 256


@dataclass(frozen=True)
class ExportOptions:
    """How to export: what to ship (int8, ORT format, LUT size, guidance), how to check and calibrate it, and
    whether to measure the memory profile. The defaults are `edgediff export` without flags.

    int8_measure=False skips measuring what int8 changes (images, FD): for benchmark bundles of untrained models,
    whose quality means nothing; int8_images is how many images that measurement samples through both denoisers.
    calib_rows caps calibration rows (t × images × cells); the number of images per
    timestep follows from it. profile_modes None measures the profiler's default session modes.
    """

    int8: bool = False
    int8_recipe: str = DEFAULT_RECIPE
    int8_measure: bool = True
    int8_images: int = INT8_IMAGES
    lut_bytes: int = DEFAULT_LUT_BYTES
    ort_format: bool = False
    fp16_weights: bool = False  # store the fp32 denoiser's weights as fp16 (half the file, same fp32 compute)
    int8_only: bool = False  # ship the int8 denoiser alone, once it passes the int8 gate (bundle_writer.drop_fp32)
    guidance: float | None = None
    profile: bool = True
    profile_modes: tuple[str, ...] | None = None
    calib_timesteps: tuple[int, ...] = CALIB_TIMESTEPS
    calib_rows: int = CALIB_ROWS
    parity_timesteps: tuple[int, ...] = PARITY_TIMESTEPS
    seed: int = 0
    overwrite: bool = False  # replace a bundle already at --out (else refused before any work)
    base: str | None = None  # a shipped model whose images this bundle redraws by default (a cascade); "none" drops it
    strength: float | None = None  # the share of the steps that redraws them
    cell_shift: int | None = None  # pixels the grid moves each way per step when sampling (edgediff.cell_shift)
    eta: float | None = None  # the DDIM η sampling uses by default (edgediff.schedule.ddim_sigma); 0 drops a record

    def __post_init__(self) -> None:
        from edgediff.errors import EdgediffError

        if self.int8_only and not self.int8:
            raise EdgediffError("--int8-only ships the int8 denoiser alone: add --int8")
        if self.int8_only and self.fp16_weights:
            raise EdgediffError("--int8-only ships no fp32 denoiser to store as fp16: drop --fp16-weights")

    def sampling(self, has_bank: bool, patch: int, recorded: dict | None = None) -> dict:
        """manifest.sampling from these options over what a bundle already records (a rebuilt bundle keeps its
        own unless told otherwise); `patch` is the cell side. Refuses what the manifest's validator would, naming
        the export flags."""
        from edgediff.cell_shift import resolve_cell_shift
        from edgediff.errors import EdgediffError
        from edgediff.sampling import resolve_eta, resolve_guidance
        from edgediff.shipped import SHIPPED

        sampling = dict(recorded or {})
        if self.guidance is not None:
            sampling["guidance"] = resolve_guidance(self.guidance, has_bank=has_bank)
        if self.cell_shift is not None:
            sampling["cell_shift"] = resolve_cell_shift(self.cell_shift, 0, patch)
            if not sampling["cell_shift"]:
                sampling.pop("cell_shift")  # 0 is what no record means: keep manifests of fixed grids as they were
        if self.eta is not None:
            sampling["eta"] = resolve_eta(self.eta)
            if not sampling["eta"]:
                sampling.pop("eta")  # likewise: deterministic DDIM is what no record means
        if self.base is not None and self.base.strip().lower() == "none":
            sampling.pop("base", None)
            return sampling
        base = self.base or sampling.get("base", {}).get("model")
        if base is None:
            if self.strength is not None:
                raise EdgediffError("--strength needs --base MODEL: the shipped model whose images this bundle redraws")
            return sampling
        if base not in SHIPPED:
            raise EdgediffError(f"--base {base} is not a shipped model ({', '.join(SHIPPED)}): a bundle may name only "
                                "those, never a path")
        strength = self.strength if self.strength is not None else sampling.get("base", {}).get("strength")
        if strength is None or not 0.0 < strength < 1.0:
            raise EdgediffError("--base needs --strength above 0 and below 1 (e.g. 0.6: the share of the steps that "
                                "redraws the base's images)")
        sampling["base"] = {"model": base, "strength": float(strength)}
        return sampling
