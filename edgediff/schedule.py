"""Noise schedule and the DDIM update rule, in numpy so that the device and training share one definition.

Training needs the same tables in torch; `edgediff.models.torch_schedule` converts these arrays rather than
re-deriving them, and a test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
SHIFT_RANGE = (1.0, 64.0)  # the resolution shifts --schedule-shift and a manifest may hold (1: none; 64: 2048 px)


def cosine_alphas_cumprod(num_timesteps: int = NUM_TRAIN_TIMESTEPS, s: float = 0.008) -> np.ndarray:
    """ᾱ_t of the cosine schedule (Nichol & Dhariwal 2021), float64, with β clipped at 0.999 as they do."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    return np.cumprod(1.0 - betas)


def shift_snr(alphas_cumprod: np.ndarray, shift: float) -> np.ndarray:
    """ᾱ_t with the signal-to-noise ratio divided by shift²: the resolution shift of "simple diffusion" (Hoogeboom
    et al. 2023) and SD3's timestep shift. Why: averaging k × k pixels divides the noise's std by k, so at 4× the
    side the pooled layout (what a cell's global content carries) is still legible at timesteps where a 32 px
    image is already noise; without the shift almost every training step is one where the layout is given, and
    the model never learns to draw one from noise. shift = the side ÷ the side the schedule was made for."""
    if shift == 1.0:
        return alphas_cumprod
    snr = alphas_cumprod / (1.0 - alphas_cumprod) / shift**2
    return snr / (1.0 + snr)


@dataclass(frozen=True)
class Schedule:
    """A named schedule: what the manifest records so the device rebuilds exactly the training tables."""

    kind: str = "cosine"
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    prediction: str = "epsilon"
    shift: float = 1.0  # SNR ÷ shift² (shift_snr); 1: the plain cosine every model before it was trained with

    def alphas_cumprod(self) -> np.ndarray:
        if self.kind != "cosine":
            raise ValueError(f"unknown schedule kind {self.kind!r}; only 'cosine' is defined")
        return shift_snr(cosine_alphas_cumprod(self.num_train_timesteps), self.shift)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "num_train_timesteps": self.num_train_timesteps, "prediction": self.prediction}
        if self.shift != 1.0:  # written only when shifted: every bundle made before keeps its manifest byte for byte
            d["shift"] = self.shift
        return d


def ddim_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Descending integer timesteps for a `num_steps` DDIM run, always starting at the noisiest step T-1."""
    if num_steps < 1 or num_steps > num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {num_steps}")
    ts = np.linspace(num_train_timesteps - 1, 0, num_steps)
    return np.round(ts).astype(np.int64)


def start_index(num_steps: int, strength: float) -> int:
    """Where an image-to-image run (SDEdit) enters the `num_steps` DDIM timesteps: it runs the last
    round(num_steps × strength) of them (at least one), so `strength` 1 is plain sampling from noise and 0.5 keeps
    the coarse layout of the start image while redrawing its detail. diffusers' img2img counts steps the same way."""
    if not 0.0 < strength <= 1.0 or not np.isfinite(strength):
        raise ValueError(f"strength {strength} must be in (0, 1]")
    return num_steps - max(1, int(round(num_steps * strength)))


def add_noise(x0: np.ndarray, noise: np.ndarray, t: np.ndarray, alphas_cumprod: np.ndarray) -> np.ndarray:
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, broadcasting t over the batch dimension."""
    a = alphas_cumprod[np.asarray(t)].reshape(-1, *([1] * (x0.ndim - 1)))
    return (np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise).astype(x0.dtype)


def predict_x0(x_t: np.ndarray, eps: np.ndarray, a, clip: bool = True) -> np.ndarray:
    """x_0 = (x_t − √(1−ᾱ) ε) / √ᾱ for ᾱ = `a` (a scalar, or per-row values broadcast over the batch), clipped to
    the image range as the DDIM step clips it."""
    x0 = (x_t - np.sqrt(1.0 - a) * eps) / np.sqrt(a)
    return np.clip(x0, -1.0, 1.0) if clip else x0


def ddim_sigma(t: int, t_prev: int, alphas_cumprod: np.ndarray, eta: float) -> float:
    """σ of DDIM's generalised step from t to t_prev (Song et al. 2021, eq. 16): η = 0 is deterministic DDIM, η = 1
    the ancestral step of DDPM on the same timesteps. Why: fresh noise at every step corrects the errors earlier
    steps made (a deterministic step keeps them), which makes a small model's shapes cleaner (docs/sampling.md).
    The last step (to x_0) adds none."""
    if eta == 0.0 or t_prev < 0:
        return 0.0
    a_t, a_prev = float(alphas_cumprod[t]), float(alphas_cumprod[t_prev])
    return float(eta * np.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)))


def ddim_step(
    x_t: np.ndarray, eps: np.ndarray, t: int, t_prev: int, alphas_cumprod: np.ndarray, clip: bool = True,
    sigma: float = 0.0,
) -> np.ndarray:
    """One DDIM update from x_t to x_{t_prev}; t_prev < 0 means 'return x_0'. With `sigma` > 0 (ddim_sigma) this
    is the step's deterministic part only: the caller adds sigma · z, since the caller owns the seeded noise.

    x_0 is clipped to the image range before re-noising: patches are predicted independently, so an
    out-of-range estimate in one cell would otherwise leak into the next step's global content.
    """
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    x0 = predict_x0(x_t, eps, a_t, clip)
    eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
    return (np.sqrt(a_prev) * x0 + np.sqrt(max(0.0, 1.0 - a_prev - sigma * sigma)) * eps).astype(x_t.dtype)
