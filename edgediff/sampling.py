"""The patch-by-patch DDIM loop, in numpy, shared by the torch evaluation sampler and the device runtime.

The denoiser is any callable `eps_fn(patch, global_content, timestep, position, snippet) -> eps` on numpy
arrays, so torch and onnxruntime run through one loop and their images can be compared exactly.

Memory shape of the loop: two full-image buffers (x_t and x_{t-1}) plus one batch of cells; each cell of
x_{t-1} is written as soon as its noise estimate is known, so no full-image eps buffer is ever held. The step is
synchronous: every cell (and every halo) reads x_t, and only the cells' centres are written into x_{t-1}.

Memory-bank guidance (`guidance` w != 1): eps = eps(∅) + w · (eps(s) − eps(∅)), where ∅ is the null (all-zero)
snippet the model also learns through snippet dropout. It is classifier-free guidance with the bank entry as the
condition: the one lever that makes every cell of an image follow the same snippet, so cells agree with each other.
`cells_per_call` keeps meaning "rows per denoiser call" (what the memory planner sizes), so a guided call carries
half as many cells, each twice; with one row per call the two halves become two calls.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgediff.cell_shift import cell_offsets, check_cell_shift, roll_into
from edgediff.cells import CellGeometry, cell_inputs, cell_slice, pool_global
from edgediff.schedule import Schedule, add_noise, ddim_sigma, ddim_step, ddim_timesteps, start_index

EpsFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def initial_noise(n: int, channels: int, image_size: int, seed: int) -> np.ndarray:
    """x_T for `n` images: the seed alone fixes it, whatever the batching later does."""
    return np.random.default_rng(seed).standard_normal((n, channels, image_size, image_size), dtype=np.float32)


STEP_NOISE_STREAM = 2  # the stream of the noise an η > 0 step adds (edgediff.cell_shift's offsets are stream 1)


def check_eta(eta: float) -> float:
    """η as a float in [0, 1] (0 = deterministic DDIM, 1 = ancestral), or ValueError."""
    e = float(eta)
    if not np.isfinite(e) or not 0.0 <= e <= 1.0:
        raise ValueError(f"eta {eta} must be a number from 0 (deterministic DDIM) to 1 (fresh noise at every step)")
    return e


def bundle_eta(eta: float | None, sampling: dict) -> float:
    """The η a bundle samples with: the one asked for, else its manifest's recommendation, else 0. The one home of
    that rule for the runtime and `eval`."""
    return resolve_eta(eta, sampling.get("eta", 0.0))


def resolve_eta(eta: float | None, default: float = 0.0) -> float:
    """The η a run uses: the one asked for, else the bundle's recommendation; a bad value is a one-line error."""
    from edgediff.errors import EdgediffError

    try:
        return check_eta(default if eta is None else eta)
    except ValueError as e:
        raise EdgediffError(f"--{e}") from None


def add_step_noise(x_prev: np.ndarray, spare: np.ndarray, sigma: float, seed: int, first_image: int,
                   step: int) -> None:
    """x_prev[i] += sigma · z, z drawn for (seed, image first_image + i, step) alone, so the plan (passes, cells per
    call) never changes an image. z is drawn into `spare` (x_t, no longer read once a step is done): no memory."""
    for i in range(len(x_prev)):
        rng = np.random.default_rng([seed, STEP_NOISE_STREAM, first_image + i, step])
        rng.standard_normal(out=spare[i], dtype=np.float32)
        spare[i] *= np.float32(sigma)
        x_prev[i] += spare[i]


def work_items(n: int, grid: int, cells_per_call: int) -> list[list[tuple[int, int]]]:
    """All (image, cell) pairs in order, chunked into calls of at most `cells_per_call` cells."""
    pairs = [(i, c) for i in range(n) for c in range(grid * grid)]
    return [pairs[k : k + cells_per_call] for k in range(0, len(pairs), cells_per_call)]


def check_guidance(guidance: float) -> float:
    """Guidance scale as a float in [0, 20] (0 = ignore the snippet, 1 = plain conditional), or ValueError."""
    g = float(guidance)
    if not np.isfinite(g) or not 0.0 <= g <= 20.0:
        raise ValueError(f"guidance {guidance} must be a number between 0 and 20 (1 = no guidance, 2-4 typical)")
    return g


def resolve_guidance(guidance: float | None, has_bank: bool, default: float = 1.0) -> float:
    """The scale a run uses: the one asked for, else `default`; a bad value, or guidance without a memory bank
    (where the condition and the null snippet are the same thing), is a one-line EdgediffError."""
    from edgediff.errors import EdgediffError

    if guidance is None:
        return float(default) if has_bank else 1.0
    try:
        g = check_guidance(guidance)
    except ValueError as e:
        raise EdgediffError(f"--{e}") from None
    if g != 1.0 and not has_bank:
        raise EdgediffError(f"--guidance {guidance:g} needs a memory bank and this model has none (trained with "
                            "--no-memory): drop --guidance")
    return g


def guided(eps_fn: EpsFn, scale: float, rows_per_call: int) -> EpsFn:
    """`eps_fn` under memory-bank guidance: one call of 2k rows (conditional, then null) when it fits in
    `rows_per_call`, else two calls of k rows. The two forms give the same numbers (up to batch effects in the
    runtime), so the plan changes speed and memory only."""

    def eps(patch, glob, t, pos, snippet):
        null = np.zeros_like(snippet)
        k = len(patch)
        if 2 * k <= rows_per_call:
            both = eps_fn(np.concatenate([patch, patch]), np.concatenate([glob, glob]), np.concatenate([t, t]),
                          np.concatenate([pos, pos]), np.concatenate([snippet, null]))
            cond, uncond = both[:k], both[k:]
        else:
            cond = eps_fn(patch, glob, t, pos, snippet)
            uncond = eps_fn(patch, glob, t, pos, null)
        return (uncond + scale * (cond - uncond)).astype(np.float32, copy=False)

    return eps


def rows_per_cell(guidance: float) -> int:
    """Denoiser rows one cell costs per step: a guided cell is run twice (with its snippet and with the null one).
    The one home of that rule: the loop, the planner and the torch sampler all ask here."""
    return 1 if guidance == 1.0 else 2


def cells_per_chunk(rows_per_call: int, guidance: float) -> int:
    """Cells handled per chunk of the loop: a guided cell takes two rows."""
    return max(1, rows_per_call // rows_per_cell(guidance))


def calls_per_chunk(rows_per_call: int, guidance: float) -> int:
    """Denoiser calls per chunk: two when a guided cell's two rows do not fit in one call (see `guided`)."""
    return 2 if rows_per_call < rows_per_cell(guidance) else 1


def sample_loop(
    eps_fn: EpsFn,
    *,
    geom: CellGeometry,
    n: int,
    steps: int,
    seed: int,
    snippets: np.ndarray,
    cells_per_call: int,
    schedule: Schedule = Schedule(),
    x_T: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
    guidance: float = 1.0,
    init: np.ndarray | None = None,
    strength: float = 1.0,
    cell_shift: int = 0,
    eta: float = 0.0,
    first_image: int = 0,
) -> np.ndarray:
    """Generate `n` images [n, C, H, W] in [-1, 1], at most `cells_per_call` rows per denoiser call, cut into cells
    as `geom` says (size, channels, grid, halo: edgediff.cells). Callers pass the geometry of what they run
    (`manifest.geometry`, `config.geometry`), never its fields one by one: four callers once forgot the halo.

    `init` [n, C, H, W] in [-1, 1] with `strength` < 1 starts from that image instead (SDEdit): it is noised to the
    first timestep of the last `strength` share of the steps with x_T as the noise, so the seed still fixes the
    run. This is how a cascade draws: a small model decides the layout, this one redraws it at its own size.

    `cell_shift` > 0 moves the grid up to that many pixels each way at every step (edgediff.cell_shift): the image
    is held rolled to each step's seeded offset, so the cells' borders fall elsewhere, and rolled back at the end.

    `eta` > 0 adds fresh seeded noise at every step but the last (ddim_sigma); `first_image`, the index of this
    call's first image in the run, keeps that noise independent of how the images were split into passes."""
    if cells_per_call < 1:
        raise ValueError(f"cells per call must be >= 1, got {cells_per_call}")
    guidance = check_guidance(guidance)
    cell_shift = check_cell_shift(cell_shift, geom.patch)
    eta = check_eta(eta)
    if guidance != 1.0:
        eps_fn = guided(eps_fn, guidance, cells_per_call)
    acp = schedule.alphas_cumprod()
    ts = ddim_timesteps(steps, schedule.num_train_timesteps)
    x = initial_noise(n, geom.channels, geom.image_size, seed) if x_T is None else x_T.astype(np.float32, copy=True)
    if init is not None:
        ts = ts[start_index(steps, strength):]
        x = add_noise(np.ascontiguousarray(init, dtype=np.float32), x, np.full(n, ts[0]), acp)  # C order: η's noise
    x_prev = np.empty_like(x)
    snippets = np.ascontiguousarray(snippets, dtype=np.float32)
    calls = work_items(n, geom.grid, cells_per_chunk(cells_per_call, guidance))
    offsets, frame = cell_offsets(len(ts), cell_shift, seed), (0, 0)  # frame: the offset x is held rolled by
    for k, t in enumerate(ts):
        t_prev = int(ts[k + 1]) if k + 1 < len(ts) else -1
        sigma = ddim_sigma(int(t), t_prev, acp, eta)
        x, x_prev, frame = _roll_to(x, x_prev, frame, offsets[k])
        _denoise_cells(eps_fn, x, x_prev, calls, geom, snippets, (int(t), t_prev), acp, sigma)
        if sigma:
            add_step_noise(x_prev, x, sigma, seed, first_image, k)
        x, x_prev = x_prev, x
        if on_step is not None:
            on_step(k)
    return _roll_to(x, x_prev, frame, (0, 0))[0]


def _denoise_cells(eps_fn: EpsFn, x: np.ndarray, x_prev: np.ndarray, calls: list, geom: CellGeometry,
                   snippets: np.ndarray, t_pair: tuple[int, int], acp: np.ndarray, sigma: float) -> None:
    """One step's denoiser calls and the deterministic part of its DDIM update: every cell reads x (x_t) and only
    its centre is written into x_prev, so the step is synchronous whatever the cells per call."""
    t, t_prev = t_pair
    pooled = pool_global(x, geom.grid)  # once per step: a call holds its own rows only
    for call in calls:
        imgs = np.fromiter((i for i, _ in call), dtype=np.int64, count=len(call))
        cells = np.fromiter((c for _, c in call), dtype=np.int64, count=len(call))
        eps = eps_fn(*cell_inputs(x, imgs, cells, t, snippets, geom, pooled=pooled))
        for j, (i, c) in enumerate(call):
            ys, xs = cell_slice(c, geom.grid, geom.patch)
            x_prev[i, :, ys, xs] = ddim_step(x[i, :, ys, xs], eps[j], t, t_prev, acp, sigma=sigma)


def _roll_to(x: np.ndarray, spare: np.ndarray, frame: tuple[int, int], offset) -> tuple:
    """`x`, held rolled by `frame`, held rolled by `offset` instead: (the image, the buffer now free, the new frame).
    The roll writes into `spare`, so shifted cells allocate nothing."""
    dy, dx = (int(v) for v in offset)
    if (dy, dx) == frame:
        return x, spare, frame
    return roll_into(spare, x, dy - frame[0], dx - frame[1]), x, (dy, dx)
