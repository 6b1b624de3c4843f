"""Cells: how an image becomes the denoiser's five inputs, and its output back into an image (numpy only).

The one home of cell geometry and of the denoiser's interface. Training (through its torch twin,
`edgediff.models.cells`, held equal by tests/test_cells.py), the sampling loop, export calibration, the manifest
check, the device runtime and the profiler all read this module, so a change to what the network takes is made here
and nowhere else. `cell_inputs` is where each input is built: the noisy cell with its halo, the global content, the
timestep, the one-hot position and the memory snippet.

Conventions: images are NCHW, a grid is `grid × grid` non-overlapping cells of side p, cell index = row * grid + col.
The global content of x_t is the whole image average-pooled down to p × p, so every cell sees a coarse view of the
entire image at the resolution of its own cell.

A cell may carry a *halo* of m pixels: the network then sees its p × p cell of x_t plus m pixels of each neighbour's
*current* x_t (side p + 2m), with a validity-mask channel (1 inside the image, 0 in the zero padding beyond its edge),
and predicts the noise of the centre p × p only. Border pixels are then predicted from both sides of the border,
which is what removes the cell grid from stitched images (benchmarks/results/seams.json). Halo 0 is the original cell
model: C channels of side p, no mask channel, so bundles exported before halos existed keep their exact interface.
The global content is zero-padded to the same side so it concatenates channel-wise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class CellInputs(NamedTuple):
    """The denoiser's five inputs for a batch of rows, in feeding order (numpy arrays, or tensors from the torch
    twin): `model(*inputs)` and `eps_fn(*inputs)` take them as they are, `inputs._asdict()` is an ONNX feed."""

    patch: Any  # [B, C(+1 mask), s, s] the noisy cell and its halo
    global_content: Any  # [B, C, s, s] the whole x_t pooled to p × p, zero-padded by the halo
    timestep: Any  # [B] int64
    position: Any  # [B, grid²] one-hot cell index
    snippet: Any  # [B, S] the memory-bank snippet (zeros: the null condition)


INPUT_NAMES = CellInputs._fields
OUTPUT_NAMES = ("eps",)
FLOAT, INT = "float32", "int64"

# Image sides in pixels, in one place. A model may declare any side in MIN/MAX_IMAGE_SIZE (TrainConfig.validate and
# the bundle manifest check it); the training-data loader (edgediff.data) is narrower: it renders, resizes and
# caches a whole dataset as one uint8 array in memory, so it takes only MIN/MAX_DATA_IMAGE_SIZE.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 1, 8192
MIN_DATA_IMAGE_SIZE, MAX_DATA_IMAGE_SIZE = 8, 1024


def patch_size(image_size: int, grid: int) -> int:
    """Side of one cell; the grid must divide the image exactly (no padding, no overlap)."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if image_size % grid:
        raise ValueError(f"grid {grid} does not divide image size {image_size}: pick a divisor of {image_size}")
    return image_size // grid


@dataclass(frozen=True)
class CellGeometry:
    """How an image becomes denoiser inputs: `grid × grid` cells of `patch` px, each seen with a `halo` margin."""

    image_size: int
    channels: int
    grid: int
    halo: int = 0

    def __post_init__(self) -> None:
        if self.grid < 1 or self.image_size % self.grid:
            raise ValueError(f"grid {self.grid} does not divide image size {self.image_size}: pick a divisor")
        if not 0 <= self.halo <= self.patch:
            raise ValueError(f"halo {self.halo} must be between 0 and the cell side {self.patch}")

    @property
    def patch(self) -> int:
        """Side of one cell (what the network predicts)."""
        return self.image_size // self.grid

    @property
    def side(self) -> int:
        """Side of the network's spatial inputs: the cell plus its halo on both sides."""
        return self.patch + 2 * self.halo

    @property
    def patch_channels(self) -> int:
        """Channels of the `patch` input: x_t, plus the validity mask when there is a halo."""
        return self.channels + (1 if self.halo else 0)

    @property
    def num_cells(self) -> int:
        return self.grid * self.grid


class HasCellGeometry:
    """For records that carry image_size, channels, grid and halo (ModelConfig, Manifest): their cell geometry, in
    one place. The geometry raises ValueError for a grid that does not divide the image or a halo wider than a
    cell."""

    @property
    def geometry(self) -> CellGeometry:
        return CellGeometry(self.image_size, self.channels, self.grid, self.halo)  # type: ignore[attr-defined]

    @property
    def num_cells(self) -> int:
        return self.geometry.num_cells


def input_specs(geom: CellGeometry, snippet_dim: int) -> list[tuple[str, str, list]]:
    """(name, dtype, shape) of each input in feeding order; 'batch' names the dynamic rows-per-call dimension."""
    s = geom.side
    return [
        ("patch", FLOAT, ["batch", geom.patch_channels, s, s]),
        ("global_content", FLOAT, ["batch", geom.channels, s, s]),
        ("timestep", INT, ["batch"]),
        ("position", FLOAT, ["batch", geom.num_cells]),
        ("snippet", FLOAT, ["batch", snippet_dim]),
    ]


def output_specs(geom: CellGeometry) -> list[tuple[str, str, list]]:
    """The noise estimate of the centre cell only: a halo is context, never output."""
    return [("eps", FLOAT, ["batch", geom.channels, geom.patch, geom.patch])]


def row_floats(geom: CellGeometry, snippet_dim: int) -> int:
    """float32 values one row of inputs plus its output holds (what the planner sizes the loop's buffers with)."""
    per_input = sum(int(np.prod(shape[1:])) for _, _, shape in input_specs(geom, snippet_dim))
    return per_input + geom.channels * geom.patch * geom.patch


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


def halo_patches(x: np.ndarray, images: np.ndarray, cells: np.ndarray, geom: CellGeometry) -> np.ndarray:
    """The `patch` input for (image, cell) pairs of x [N, C, H, W]: each cell with its halo and, when there is a
    halo, the validity-mask channel. Beyond the image edge the halo is zero. No padded copy of x is made."""
    p, m, s, c = geom.patch, geom.halo, geom.side, geom.channels
    out = np.zeros((len(cells), geom.patch_channels, s, s), dtype=np.float32)
    for j, (i, cell) in enumerate(zip(images, cells)):
        row, col = divmod(int(cell), geom.grid)
        y0, x0 = row * p - m, col * p - m  # top-left of the crop in image coordinates (may be negative)
        ya, yb = max(0, y0), min(geom.image_size, y0 + s)
        xa, xb = max(0, x0), min(geom.image_size, x0 + s)
        out[j, :c, ya - y0 : yb - y0, xa - x0 : xb - x0] = x[int(i), :, ya:yb, xa:xb]
        if m:
            out[j, c, ya - y0 : yb - y0, xa - x0 : xb - x0] = 1.0
    return out


def pad_global(glob: np.ndarray, geom: CellGeometry) -> np.ndarray:
    """Global content [K, C, p, p] zero-padded to the input side (a no-op without a halo)."""
    m = geom.halo
    if not m:
        return glob
    return np.pad(glob, ((0, 0), (0, 0), (m, m), (m, m)))


def crop_centre(x, halo: int):
    """The cell's own p × p out of a (p + 2·halo)-sided map (numpy array or torch tensor, any leading axes): the
    halo is context, the cell is what the denoiser predicts and what its errors are measured on."""
    return x[..., halo : x.shape[-2] - halo, halo : x.shape[-1] - halo] if halo else x


def cell_inputs(x_t: np.ndarray, images: np.ndarray, cells: np.ndarray, timestep: int | np.ndarray,
                snippets: np.ndarray, geom: CellGeometry, pooled: np.ndarray | None = None) -> CellInputs:
    """The denoiser's inputs for rows (images[k], cells[k]) of x_t [N, C, H, W]: the one place each is built.

    `timestep` is one int for every row or an int array over the N images; `snippets` [N, S] holds each image's
    snippet (zeros for the null one). `pooled` is `pool_global(x_t, grid)` when the caller already has it: the
    sampler pools x_t once per step, not once per call, so a call never holds more than its own rows.
    """
    images = np.asarray(images, dtype=np.int64)
    pooled = pool_global(x_t, geom.grid) if pooled is None else pooled
    t = np.asarray(timestep, dtype=np.int64)
    return CellInputs(
        patch=halo_patches(x_t, images, cells, geom),
        global_content=pad_global(pooled[images], geom),
        timestep=np.full(len(images), t, dtype=np.int64) if t.ndim == 0 else t[images],
        position=onehot(cells, geom.grid),
        snippet=snippets[images],
    )


def example_feeds(geom: CellGeometry, snippet_dim: int, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Well-formed inputs for `rows` rows (random x_t, a real mask, one-hot positions): for export tracing and
    memory profiling, where the values do not matter but the shapes and the one-hot structure do."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, dtype, shape in input_specs(geom, snippet_dim):
        shape = [rows, *shape[1:]]
        if dtype == INT:
            feeds[name] = rng.integers(0, 1000, size=shape, dtype=np.int64)
        elif name == "position":
            feeds[name] = np.eye(geom.num_cells, dtype=np.float32)[np.arange(rows) % geom.num_cells]
        else:
            feeds[name] = rng.standard_normal(shape, dtype=np.float32)
    if geom.halo:
        feeds["patch"][:, geom.channels] = 1.0
    return feeds
