"""How much int8 changes what a user sees: ε error per timestep band, the x₀ error it causes, and the images.

Why not one pooled ε error: near t = 0 the noise is almost invisible in x_t, so ε is nearly unobservable and its
error is large, yet it barely moves the image (the DDIM update weighs ε by √(1−ᾱ_t), which vanishes there).
A pooled norm over all t is dominated by those rows. So this module reports, on real inputs like calibration's:
- `rel_error_by_band`: ‖ε_int8 − ε_fp32‖ / ‖ε_fp32‖ within each timestep band;
- `x0_rel_error_by_band`: the same for the predicted x₀ = (x_t − √(1−ᾱ)·ε)/√ᾱ, clipped as the DDIM step
  clips it: the error the update carries (x_t cancels: √(1−ᾱ)/√ᾱ·Δε, relative to the x₀ estimate). At t near
  999 x₀ is itself unobservable (√ᾱ → 0), so that band's x₀ figure is large and says little;
- `psnr_vs_fp32_db` / `mean_abs_diff_255`: the same noise and snippets sampled through both models (DDIM, the
  bundle's guidance): what a user would see change. PSNR is over the pooled squared error, so the few images
  whose trajectory diverges dominate it; `psnr_median_image_db` is the typical image;
- `fd_delta`: for each quality metric (name → function of uint8 images), its value on the fp32 and the int8 images
  and the relative change. Metrics are passed in, so a second metric (another encoder) is one more dict entry.

Input names and shapes come from the ONNX file itself, so a denoiser with other inputs (e.g. a halo patch with a
mask channel) is measured unchanged: x_t of a cell is the first C channels of the first 4-d input, centre-cropped
to the output's side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.cells import crop_centre
from edgediff.model_config import ModelConfig
from edgediff.sampling import sample_loop
from edgediff.schedule import Schedule, predict_x0
from edgediff_export.calibration import RunData, denoiser_inputs
from edgediff_export.onnx_export import run_rows, session  # noqa: F401  (re-exported: tests and benchmarks use them here)

# [lo, hi] timestep bands: t ≤ 50 is where ε is unobservable; t ≥ 100 is where the goal asks ε error ≤ 5%
BANDS = ((0, 49), (50, 99), (100, 399), (400, 699), (700, 999))
TIMESTEPS_PER_BAND = 4
Metric = Callable[[np.ndarray], float]  # uint8 images [N, H, W, 3] → a distance to the real data (lower = better)


def band_name(band: tuple[int, int]) -> str:
    return f"{band[0]}-{band[1]}"


def band_timesteps(bands=BANDS, per_band: int = TIMESTEPS_PER_BAND) -> np.ndarray:
    """`per_band` evenly spaced timesteps inside each band, descending overall."""
    ts = [np.linspace(lo, hi, per_band).round().astype(np.int64) for lo, hi in bands]
    return np.unique(np.concatenate(ts))[::-1].copy()


def cell_xt(inputs: dict[str, np.ndarray], sess, out_shape: tuple[int, ...]) -> np.ndarray:
    """x_t of each row's cell: the first C channels of the first 4-d input, centre-cropped to the output side."""
    spatial = next(i.name for i in sess.get_inputs() if len(i.shape) == 4)
    x = inputs[spatial]
    return crop_centre(x[:, : out_shape[1]], (x.shape[-1] - out_shape[-1]) // 2)


def rel(diff: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-12))


def band_errors(eps_ref: np.ndarray, eps_q: np.ndarray, x_t: np.ndarray, t: np.ndarray,
                schedule: Schedule, bands=BANDS) -> dict:
    """ε and x₀ relative errors per band (see module docstring), plus the pooled ε error (`rel_error`)."""
    acp = schedule.alphas_cumprod()
    a = acp[t].reshape(-1, *([1] * (eps_ref.ndim - 1)))

    x0_ref, x0_q = predict_x0(x_t, eps_ref, a), predict_x0(x_t, eps_q, a)
    by_eps, by_x0, rows = {}, {}, {}
    for band in bands:
        m = (t >= band[0]) & (t <= band[1])
        if not m.any():
            continue
        key = band_name(band)
        by_eps[key] = rel(eps_q[m] - eps_ref[m], eps_ref[m])
        by_x0[key] = rel(x0_q[m] - x0_ref[m], x0_ref[m])
        rows[key] = int(m.sum())
    return {"rel_error_by_band": by_eps, "x0_rel_error_by_band": by_x0, "rows_by_band": rows,
            "rel_error": rel(eps_q - eps_ref, eps_ref), "max_abs": float(np.abs(eps_q - eps_ref).max())}


def eps_fn_of(sess):
    """The sampler's positional denoiser over a session, fed by the session's own input names (in file order)."""
    names = [i.name for i in sess.get_inputs()]

    def eps_fn(*args):
        return sess.run(None, dict(zip(names, args)))[0]

    return eps_fn


def psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    """PSNR in dB between two uint8 image sets; capped at 99 dB for identical images (JSON has no infinity)."""
    mse = float(np.mean((a_u8.astype(np.float64) - b_u8.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else min(99.0, 10.0 * math.log10(255.0**2 / mse))


def image_report(ref_u8: np.ndarray, q_u8: np.ndarray, metrics: dict[str, Metric]) -> dict:
    """PSNR and mean |Δ| of the int8 images against the fp32 ones, and each metric's change (fd_delta)."""
    fd = {}
    for name, metric in metrics.items():
        a, b = float(metric(ref_u8)), float(metric(q_u8))
        fd[name] = {"fp32": a, "int8": b, "rel": (b - a) / a if a > 0 else 0.0}
    per_image = sorted(psnr(a, b) for a, b in zip(ref_u8, q_u8))
    return {"psnr_vs_fp32_db": psnr(ref_u8, q_u8), "psnr_median_image_db": per_image[len(per_image) // 2],
            "mean_abs_diff_255": float(np.mean(np.abs(ref_u8.astype(np.int16) - q_u8.astype(np.int16)))),
            "fd_delta": fd}


class Fp32Reference:
    """fp32's side of every int8 comparison, computed once: ε on real band inputs (every cell, a fifth null
    snippets) and the images from fixed noise and snippets. `measure_int8` compares one int8 file with it; the
    levers benchmark compares many, so all rows and the manifest are measured the same way."""

    def __init__(self, fp32: Path, data: RunData, config: ModelConfig, snippets: np.ndarray, *, guidance: float,
                 steps: int = 25, seed: int = 0, images_per_t: int = 8, cells_per_call: int = 16, eta: float = 0.0,
                 start: Start | None = None, cell_shift: int = 0):
        from edgediff.images import to_uint8

        sess = session(fp32)
        self.config, self.schedule = config, config.schedule
        self.inputs = denoiser_inputs(data, config, band_timesteps(), images_per_t=images_per_t, seed=seed + 11,
                                      null_fraction=0.2)
        self.eps = run_rows(sess, self.inputs)
        self.x_t = cell_xt(self.inputs, sess, self.eps.shape)
        start = start or Start()
        self.sampling = dict(geom=config.geometry, n=len(snippets), steps=steps, seed=seed + 29, snippets=snippets,
                             cells_per_call=cells_per_call, schedule=self.schedule, guidance=guidance, eta=eta,
                             init=start.images, strength=start.strength, cell_shift=cell_shift)
        self.images = to_uint8(sample_loop(eps_fn_of(sess), **self.sampling))

    def band_errors(self, model: Path) -> dict:
        """ε and x₀ error per band of `model` against fp32 (see module docstring)."""
        out = band_errors(self.eps, run_rows(session(model), self.inputs), self.x_t, self.inputs["timestep"],
                          self.schedule)
        out["rows_checked"] = int(len(self.eps))
        return out

    def compare(self, int8: Path, metrics: dict[str, Metric]) -> dict:
        """Everything for one int8 file: band errors, then its images against fp32's (PSNR, each metric's change)."""
        from edgediff.images import to_uint8

        out = self.band_errors(int8)
        images = to_uint8(sample_loop(eps_fn_of(session(int8)), **self.sampling))
        out.update(image_report(self.images, images, metrics))
        return out


def measure_int8(fp32: Path, int8: Path, data: RunData, config: ModelConfig, *, metrics: dict[str, Metric],
                 images: int = 256, steps: int = 25, guidance: float = 1.0, eta: float = 0.0, seed: int = 0,
                 start: Start | None = None, cell_shift: int = 0) -> dict:
    """What the manifest records as `quality.int8` (besides how it was made): `Fp32Reference.compare` on `images`
    images conditioned on random bank entries (the null snippet and no guidance without a bank), sampled with the
    guidance, DDIM η, cell shift and start images (a cascade's) the bundle records, so the int8 gate judges the
    sampler `edgediff sample` runs. Images are drawn with seed + 29: `start` must be drawn with it too."""
    rng = np.random.default_rng(seed + 23)
    if data.bank is not None:
        snippets = data.bank[rng.integers(0, len(data.bank), images)].astype(np.float32)
    else:
        snippets = np.zeros((images, config.snippet_dim), dtype=np.float32)
        guidance = 1.0
    ref = Fp32Reference(fp32, data, config, snippets, guidance=guidance, steps=steps, seed=seed, eta=eta,
                        start=start, cell_shift=cell_shift)
    out = ref.compare(int8, metrics)
    out["images"] = {"n": int(images), "ddim_steps": int(steps), "guidance": float(guidance), "eta": float(eta),
                     "cell_shift": int(cell_shift), "base": (start or Start()).base, "seed": int(seed + 29)}
    return out


@dataclass(frozen=True)
class Start:
    """Where a measurement's images start: noise, or a cascade base's images (float [n, C, H, W] in [-1, 1] at
    this bundle's size) redrawn from `strength`; `base` is the manifest's record of it, kept with the figures."""

    images: np.ndarray | None = None
    strength: float = 1.0
    base: dict | None = None


def fd_metric(real_features: np.ndarray, encoder: str = "lite0") -> Metric:
    """FD of generated images against fixed real features (the dataset's, cached by the encoder) in the space of
    `encoder` ("lite0": the bank's own space; "independent": a network the bank does not use)."""
    from edgediff.encoders import encode
    from edgediff.metrics import fd_lite0

    return lambda images_u8: fd_lite0(encode(images_u8, encoder=encoder), real_features)


def default_metrics(dataset) -> dict[str, Metric]:
    """The quality metrics `fd_delta` reports, keyed by the name recorded in the manifest: FD in the bank's
    feature space and in the independent one (a change the bank's metric cannot see still shows)."""
    from edgediff.encoders import dataset_features

    return {name: fd_metric(dataset_features(dataset, encoder=enc, progress=False), enc)
            for name, enc in (("fd_lite0", "lite0"), ("fd_independent", "independent"))}


def bundle_run_data(bundle_dir: Path, data: str = "emoji", max_images: int = 512,
                    seed: int = 0) -> tuple[RunData, ModelConfig]:
    """Calibration/measurement data for a bundle without its training run: the dataset's images, each paired with
    its memory-bank entry decoded from the bundle's LUT (the bank is row-aligned with the dataset when it has as
    many entries; otherwise entries are drawn at random)."""
    from edgediff.bundle import read_manifest, resolve
    from edgediff.data import load_dataset
    from edgediff.lut import decode

    m = read_manifest(bundle_dir)
    config = m.model_config
    if config is None:  # only hand-made bundles lack it; their calibration inputs would have no known shape
        raise EdgediffError(f"{bundle_dir} records no model_config to rebuild its inputs from; export from its "
                            "training run instead")
    ds = load_dataset(data, m.image_size)
    bank = None
    if m.lut is not None:
        bank = decode(np.load(resolve(bundle_dir, m.files["lut_codes"]), allow_pickle=False),
                      np.load(resolve(bundle_dir, m.files["lut_codebooks"]), allow_pickle=False))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), min(max_images, len(ds)), replace=False))
    if bank is not None and len(bank) == len(ds):
        bank = bank[idx]
    return RunData(images=ds.as_float(idx), bank=bank), config
