"""The patch-by-patch DDIM loop, in numpy, shared by the torch evaluation sampler and the device runtime.

The denoiser is any callable `eps_fn(patch, global_content, timestep, position, snippet) -> eps` on numpy
arrays, so torch and onnxruntime run through one loop and their images can be compared exactly.

Memory shape of the loop: two full-image buffers (x_t and x_{t-1}) plus one batch of cells; each cell of
x_{t-1} is written as soon as its noise estimate is known, so no full-image eps buffer is ever held.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from edgediff.patches import cell_slice, onehot, patch_size, pool_global
from edgediff.schedule import Schedule, ddim_step, ddim_timesteps

EpsFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def initial_noise(n: int, channels: int, image_size: int, seed: int) -> np.ndarray:
    """x_T for `n` images: the seed alone fixes it, whatever the batching later does."""
    return np.random.default_rng(seed).standard_normal((n, channels, image_size, image_size), dtype=np.float32)


def work_items(n: int, grid: int, cells_per_call: int) -> list[list[tuple[int, int]]]:
    """All (image, cell) pairs in order, chunked into calls of at most `cells_per_call` cells."""
    pairs = [(i, c) for i in range(n) for c in range(grid * grid)]
    return [pairs[k : k + cells_per_call] for k in range(0, len(pairs), cells_per_call)]


def sample_loop(
    eps_fn: EpsFn,
    *,
    n: int,
    image_size: int,
    channels: int,
    grid: int,
    steps: int,
    seed: int,
    snippets: np.ndarray,
    cells_per_call: int,
    schedule: Schedule = Schedule(),
    x_T: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Generate `n` images [n, C, H, W] in [-1, 1], `cells_per_call` cells per denoiser call."""
    if cells_per_call < 1:
        raise ValueError(f"cells per call must be >= 1, got {cells_per_call}")
    p = patch_size(image_size, grid)
    acp = schedule.alphas_cumprod()
    ts = ddim_timesteps(steps, schedule.num_train_timesteps)
    x = initial_noise(n, channels, image_size, seed) if x_T is None else x_T.astype(np.float32, copy=True)
    x_prev = np.empty_like(x)
    snippets = np.ascontiguousarray(snippets, dtype=np.float32)
    calls = work_items(n, grid, cells_per_call)
    for k, t in enumerate(ts):
        t_prev = int(ts[k + 1]) if k + 1 < len(ts) else -1
        glob = pool_global(x, grid)
        for call in calls:
            imgs = np.fromiter((i for i, _ in call), dtype=np.int64, count=len(call))
            cells = np.fromiter((c for _, c in call), dtype=np.int64, count=len(call))
            patch = np.stack([x[i, :, ys, xs] for i, c in call for ys, xs in [cell_slice(c, grid, p)]])
            eps = eps_fn(
                patch,
                glob[imgs],
                np.full(len(call), t, dtype=np.int64),
                onehot(cells, grid),
                snippets[imgs],
            )
            for j, (i, c) in enumerate(call):
                ys, xs = cell_slice(c, grid, p)
                x_prev[i, :, ys, xs] = ddim_step(patch[j], eps[j], int(t), t_prev, acp)
        x, x_prev = x_prev, x
        if on_step is not None:
            on_step(k)
    return x


def iter_chunks(seq: Iterable, size: int):
    """Yield lists of at most `size` items (used to batch images for metrics and export calibration)."""
    buf = []
    for item in seq:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf
