"""Training previews: a small grid of samples from the EMA model every --sample-every steps, sized to stay cheap.

A preview is a quick look at how training goes, never a measurement, so it may cost only a small share of the
training time: its size is chosen from this run's own measured step time, and a preview that would cost too much is
skipped with a line in the log.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgediff.images import make_grid, save_png, to_uint8
from edgediff.memory_bank import Snippets
from edgediff.models import ModelConfig

if TYPE_CHECKING:
    from edgediff.train import TrainConfig

PREVIEW_FRACTION = 0.05  # of the training time since the last preview
PREVIEW_FREE_S = 3.0  # a preview estimated below this is always drawn: too short to matter
PREVIEW_SIZES = ((16, 25), (16, 15), (9, 15), (16, 10), (9, 10), (4, 10))  # (images, DDIM steps), best first


def preview_size(step_s: float, batch_size: int, steps_since: int, cells: int) -> tuple[int, int] | None:
    """(images, DDIM steps) of the largest preview that costs at most PREVIEW_FRACTION of the training since the
    last one (or PREVIEW_FREE_S), else None. Cost model, from this run's own measured step time: a training step
    is forward + backward (≈ 3 forwards) of `batch_size` cells; a preview is images × steps × cells forwards."""
    per_cell_s = step_s / (3.0 * batch_size)
    allowed = max(PREVIEW_FRACTION * step_s * steps_since, PREVIEW_FREE_S)
    for n, steps in PREVIEW_SIZES:
        if n * steps * cells * per_cell_s <= allowed:
            return n, steps
    return None


def save_preview(model, mcfg: ModelConfig, snippets: Snippets, path: Path, seed: int, device, n: int = 16,
                 steps: int = 25) -> Path:
    """A grid of `n` samples (`steps` DDIM steps) from the EMA model: the quick look at how training goes."""
    from edgediff.torch_sampler import sample_torch

    sn = None
    if snippets.own is not None:
        pick = np.random.default_rng(seed).integers(0, len(snippets.own), n)
        sn = snippets.own[pick]
    imgs = sample_torch(model, mcfg, n=n, steps=steps, seed=seed, snippets=sn, device=device)
    return save_png(make_grid(to_uint8(imgs)), path, scale=2)


def draw_preview(ema, mcfg: ModelConfig, snippets: Snippets, cfg: TrainConfig, step: int, since: tuple[int, float],
                 device, log: Callable[[str], None]) -> Path | None:
    """Draw the preview of `step`, sized by `preview_size` from the time trained since the last one; None when
    even the smallest would cost too much (said once in the log)."""
    steps_since = max(1, step - since[0])
    size = preview_size((time.perf_counter() - since[1]) / steps_since, cfg.batch_size, steps_since, mcfg.num_cells)
    if size is None:
        log(f"preview at step {step} skipped: even {PREVIEW_SIZES[-1][0]} images × {PREVIEW_SIZES[-1][1]} steps would "
            f"cost more than {PREVIEW_FRACTION:.0%} of the training since the last one (sample an export instead)")
        return None
    path = Path(cfg.out) / "samples" / f"step_{step:06d}.png"
    log(f"preview at step {step}: {size[0]} images × {size[1]} DDIM steps → {path}")
    return save_preview(ema, mcfg, snippets, path, cfg.seed, device, n=size[0], steps=size[1])
