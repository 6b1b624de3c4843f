"""Grid geometry in numpy: the one definition of how an image becomes cells and back.

Conventions: images are NCHW, a grid is `grid × grid` non-overlapping cells, cell index = row * grid + col.
The global content of x_t is the whole image average-pooled down to the patch size, so every cell sees a
coarse view of the entire image at the same resolution as its own patch.
"""

from __future__ import annotations

import numpy as np


def patch_size(image_size: int, grid: int) -> int:
    """Side of one cell; the grid must divide the image exactly (no padding, no overlap)."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if image_size % grid:
        raise ValueError(f"grid {grid} does not divide image size {image_size}: pick a divisor of {image_size}")
    return image_size // grid


def split(images: np.ndarray, grid: int) -> np.ndarray:
    """[N, C, H, W] → [N, grid², C, H/grid, W/grid], cells in row-major order."""
    n, c, h, w = images.shape
    p = patch_size(h, grid)
    if w != h:
        raise ValueError(f"images must be square, got {h}x{w}")
    x = images.reshape(n, c, grid, p, grid, p)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, p, p)


def stitch(cells: np.ndarray, grid: int) -> np.ndarray:
    """Inverse of `split`: [N, grid², C, p, p] → [N, C, grid·p, grid·p] by plain assignment."""
    n, g2, c, p, _ = cells.shape
    if g2 != grid * grid:
        raise ValueError(f"expected {grid * grid} cells, got {g2}")
    x = cells.reshape(n, grid, grid, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, grid * p, grid * p)


def cell_slice(index: int, grid: int, patch: int) -> tuple[slice, slice]:
    """Row and column slices of cell `index` inside the full image."""
    row, col = divmod(index, grid)
    return slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch)


def onehot(indices: np.ndarray | list[int], grid: int) -> np.ndarray:
    """One-hot position vectors [len(indices), grid²], float32."""
    idx = np.asarray(indices, dtype=np.int64)
    out = np.zeros((idx.size, grid * grid), dtype=np.float32)
    out[np.arange(idx.size), idx] = 1.0
    return out


def pool_global(images: np.ndarray, grid: int) -> np.ndarray:
    """Average-pool [N, C, H, W] by `grid` to [N, C, H/grid, W/grid]: the global content each cell sees."""
    n, c, h, w = images.shape
    p = patch_size(h, grid)
    return images.reshape(n, c, p, grid, p, grid).mean(axis=(3, 5), dtype=np.float32)
