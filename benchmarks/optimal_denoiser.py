"""The closed-form optimal denoiser: the model that has memorised its training set perfectly, as a reference for
benchmarks/memorization.py (its "optimal_full_image" and "optimal_patch" rows).

The optimum of the denoising objective over a finite training set has a closed form,
D(x; σ) = Σᵢ softmax_i(−‖x − yᵢ‖² / 2σ²) yᵢ, which can only replay training data: the model a fully memorising
network converges to. Sampling it through the shared DDIM loop (edgediff.sampling.sample_loop) gives the reference
point of "memorisation ratio 1". For a patch model it is the Bayes-optimal denoiser given what one cell sees (its
pixels plus the pooled image), which is why even it does not replay whole images every time.

It lives here, not in the package: only this benchmark (and its tests) sample it; `edgediff audit` needs only the
nearest-neighbour ratio and the energy (edgediff.memorization), whose streaming it reuses.
"""

from __future__ import annotations

import numpy as np

from edgediff.memorization import BLOCK_BYTES, Transform, flatten, stream_sq_dists
from edgediff.cells import cell_slice, patch_size
from edgediff.schedule import Schedule


def optimal_denoiser(
    x: np.ndarray, stored: np.ndarray, sigma: float, *, transform: Transform = flatten, block_bytes: int = BLOCK_BYTES,
) -> np.ndarray:
    """D(x; σ) = Σᵢ softmax_i(−‖x − yᵢ‖² / 2σ²) yᵢ for queries x [M, ...] → [M, D] (rows in `transform` space).

    Streaming softmax (running max, rescaled sum and numerator, as in flash attention): memory O(M·D).
    """
    num = None
    run_max = np.full(len(x), -np.inf)
    run_sum = np.zeros(len(x))
    for sl, _, d2, r in stream_sq_dists(x, stored, transform, block_bytes):
        if num is None:
            num = np.zeros((len(x), r.shape[1]))
        logits = -d2 / (2.0 * sigma * sigma)
        _online_softmax_update(sl, logits, r, run_max, run_sum, num)
    return num / run_sum[:, None]


def _online_softmax_update(sl: slice, logits: np.ndarray, values: np.ndarray, run_max: np.ndarray,
                           run_sum: np.ndarray, num: np.ndarray) -> None:
    m_new = np.maximum(run_max[sl], logits.max(axis=1))
    scale = np.exp(run_max[sl] - m_new)
    w = np.exp(logits - m_new[:, None])
    run_sum[sl] = run_sum[sl] * scale + w.sum(axis=1)
    num[sl] = num[sl] * scale[:, None] + w @ values
    run_max[sl] = m_new


class OptimalPatchDenoiser:
    """The Bayes-optimal ε-predictor for a *patch* model whose training set is `stored`: an `EpsFn` for
    `edgediff.sampling.sample_loop`, so it samples through the very loop the real models use.

    A patch model sees one noisy cell plus the whole noisy image average-pooled to cell size. The posterior over
    which stored image yᵢ produced x_t, given exactly that, weighs the cell's pixels and the out-of-cell part of
    every pooled pixel (g²·pooled − the in-cell pixels of its block = a sum of k noisy pixels, noise variance kσ²).
    With grid = 1 this is the full-image D(x; σ) above. The snippet input is ignored: this is the unconditional
    (null-snippet) optimum. Memory: about three float32 copies of `stored`, so keep it to a few thousand images.
    """

    def __init__(self, stored: np.ndarray, grid: int, schedule: Schedule = Schedule()):
        y = np.asarray(stored, dtype=np.float32)  # [N, C, H, W] in [-1, 1]
        if y.ndim != 4 or y.shape[2] != y.shape[3]:
            raise ValueError(f"stored images must be [N, C, H, W] square, got {y.shape}")
        self.grid = grid
        self.acp = schedule.alphas_cumprod()
        n, c, h, _ = y.shape
        self.p = p = patch_size(h, grid)
        self.channels, self.size = c, h
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.in_masks: list[np.ndarray] = []
        self.out_sel: list[np.ndarray] = []
        self.out_norm: list[np.ndarray] = []
        for cell in range(grid * grid):
            ys, xs = cell_slice(cell, grid, p)
            inside = np.zeros((h, h), dtype=np.float32)
            inside[ys, xs] = 1.0
            k = self._block_sum(1.0 - inside).reshape(-1)  # out-of-cell pixels per pooled pixel [p*p]
            sel = np.flatnonzero(k > 0)
            norm = 1.0 / np.sqrt(k[sel]).astype(np.float32)
            vals = y[:, :, ys, xs].reshape(n, -1)
            out_sums = self._block_sum(y * (1.0 - inside)).reshape(n, c, -1)[:, :, sel] * norm
            self.keys.append(np.concatenate([vals, out_sums.reshape(n, -1)], axis=1))
            self.values.append(vals)
            self.in_masks.append(inside)
            self.out_sel.append(sel)
            self.out_norm.append(norm)

    def _block_sum(self, img: np.ndarray) -> np.ndarray:
        """Sum over each grid×grid block: the un-normalised `pool_global` ([..., H, W] → [..., p, p])."""
        g, p = self.grid, self.p
        return img.reshape(*img.shape[:-2], p, g, p, g).sum(axis=(-3, -1))

    def cell_x0(self, patch: np.ndarray, glob: np.ndarray, cell: int, t: int) -> np.ndarray:
        """Posterior mean of the clean cell [m, C, p, p] given noisy patches and pooled images at timestep t."""
        a = float(self.acp[t])
        sigma2 = (1.0 - a) / a
        m = len(patch)
        ys, xs = cell_slice(cell, self.grid, self.p)
        placed = np.zeros((m, self.channels, self.size, self.size), dtype=np.float64)
        placed[:, :, ys, xs] = patch
        resid = self.grid * self.grid * glob.astype(np.float64) - self._block_sum(placed)
        resid = resid.reshape(m, self.channels, -1)[:, :, self.out_sel[cell]] * self.out_norm[cell]
        q = np.concatenate([patch.reshape(m, -1), resid.reshape(m, -1)], axis=1) / np.sqrt(a)
        keys = self.keys[cell]
        d2 = (q**2).sum(axis=1)[:, None] + (keys.astype(np.float64) ** 2).sum(axis=1)[None] - 2.0 * q @ keys.T
        logits = -np.maximum(d2, 0.0) / (2.0 * sigma2)
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        return (w @ self.values[cell]).reshape(m, self.channels, self.p, self.p)

    def __call__(self, patch, glob, timestep, position, snippet) -> np.ndarray:
        t = np.asarray(timestep)
        cells = np.asarray(position).argmax(axis=1)
        eps = np.empty(patch.shape, dtype=np.float32)
        for tt in np.unique(t):
            for cell in np.unique(cells[t == tt]):
                rows = np.flatnonzero((t == tt) & (cells == cell))
                x0 = self.cell_x0(patch[rows], glob[rows], int(cell), int(tt))
                a = float(self.acp[tt])
                eps[rows] = (patch[rows] - np.sqrt(a) * x0) / np.sqrt(1.0 - a)
        return eps


def sample_optimal(
    stored: np.ndarray, *, n: int, grid: int = 1, steps: int = 25, seed: int = 0, cells_per_call: int | None = None,
    schedule: Schedule = Schedule(),
) -> np.ndarray:
    """Images [n, C, H, W] in [-1, 1] from the closed-form optimal (fully memorising) patch denoiser.

    Runs the shared DDIM loop, so it differs from a trained model only in the denoiser: the reference sample set a
    model that memorised `stored` perfectly would produce.
    """
    from edgediff.cells import CellGeometry
    from edgediff.sampling import sample_loop

    y = np.asarray(stored, dtype=np.float32)
    den = OptimalPatchDenoiser(y, grid, schedule)
    return sample_loop(
        den, geom=CellGeometry(y.shape[2], y.shape[1], grid, halo=0),  # the optimal denoiser sees each cell alone
        n=n, steps=steps, seed=seed, snippets=np.zeros((n, 1), dtype=np.float32),
        cells_per_call=cells_per_call or n * grid * grid, schedule=schedule,
    )
