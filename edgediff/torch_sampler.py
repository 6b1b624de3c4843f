"""Sampling a torch model through the shared numpy loop: what training previews and evaluation use.

The device runtime runs the very same `sample_loop` with onnxruntime instead, so their images are directly
comparable (export's parity check and the tests rely on it).
"""

from __future__ import annotations

import numpy as np
import torch

from edgediff.model_config import ModelConfig
from edgediff.sampling import rows_per_cell, sample_loop


def torch_eps_fn(model: torch.nn.Module, device: torch.device | str = "cpu"):
    """Wrap a denoiser as a numpy → numpy callable (no grad, eval mode)."""
    model.eval()

    @torch.no_grad()
    def eps_fn(patch, glob, t, pos, snippet):
        args = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (patch, glob, t, pos, snippet)]
        return model(*args).float().cpu().numpy()

    return eps_fn


def sample_torch(
    model: torch.nn.Module,
    config: ModelConfig,
    *,
    n: int,
    steps: int = 25,
    seed: int = 0,
    snippets: np.ndarray | None = None,
    cells_per_call: int | None = None,
    device: torch.device | str = "cpu",
    guidance: float = 1.0,
    on_step=None,
    init: np.ndarray | None = None,
    strength: float = 1.0,
    eta: float = 0.0,
) -> np.ndarray:
    """Images [n, C, H, W] in [-1, 1]; `snippets` None means the null (all-zero) condition; `guidance` w != 1
    applies memory-bank guidance (edgediff.sampling.guided), meaningless without snippets. `on_step(k)` is called
    after DDIM step k (progress); `init` with `strength` < 1 redraws given images (sample_loop, SDEdit); `eta` > 0
    adds fresh noise at every step (sample_loop)."""
    if snippets is None:
        snippets = np.zeros((n, config.snippet_dim), dtype=np.float32)
    return sample_loop(
        torch_eps_fn(model, device),
        geom=config.geometry,
        n=n,
        steps=steps,
        seed=seed,
        snippets=snippets,
        cells_per_call=cells_per_call or n * config.num_cells * rows_per_cell(guidance),
        guidance=guidance,
        on_step=on_step,
        schedule=config.schedule,
        init=init,
        strength=strength,
        eta=eta,
    )
