"""Torch twin of `edgediff.cells`: the denoiser's inputs built on the training device, without a round trip to numpy.

Training draws its batches as tensors (on the GPU when there is one), so it cannot call the numpy builders; these
functions do the same thing in torch and tests/test_cells.py holds every one of them equal to its numpy original on
the same inputs. Geometry is never decided here: sides, halo and channel counts come from `CellGeometry`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgediff.cells import INPUT_NAMES, CellGeometry, CellInputs, example_feeds


def split_torch(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.cells.split` ([N,C,H,W] → [N, grid², C, p, p])."""
    n, c, h, w = images.shape
    p = h // grid
    x = images.reshape(n, c, grid, p, grid, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, p, p)


def stitch_torch(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.cells.stitch`."""
    n, _, c, p, _ = cells.shape
    return cells.reshape(n, grid, grid, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, grid * p, grid * p)


def halo_patches_torch(x: torch.Tensor, images: torch.Tensor, cells: torch.Tensor, geom: CellGeometry) -> torch.Tensor:
    """Torch twin of `edgediff.cells.halo_patches` (x [N,C,H,W], rows (images[k], cells[k]) → [K, C(+1), s, s]):
    pad once with zeros (and a validity channel), then gather each crop with index grids."""
    m, s, p = geom.halo, geom.side, geom.patch
    x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1) if m else x
    x = F.pad(x, (m, m, m, m))
    offs = torch.arange(s, device=x.device)
    ys = (cells // geom.grid * p)[:, None] + offs  # [K, s] rows of the padded image
    xs = (cells % geom.grid * p)[:, None] + offs
    rows = images[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[rows, chans, ys[:, None, :, None], xs[:, None, None, :]]


def pad_global_torch(glob: torch.Tensor, halo: int) -> torch.Tensor:
    """Torch twin of `edgediff.cells.pad_global`."""
    return F.pad(glob, (halo, halo, halo, halo)) if halo else glob


def pool_global_torch(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.cells.pool_global`."""
    return F.avg_pool2d(images, kernel_size=grid) if grid > 1 else images


def cell_inputs_torch(x_t: torch.Tensor, images: torch.Tensor, cells: torch.Tensor, timestep: int | torch.Tensor,
                      snippets: torch.Tensor, geom: CellGeometry) -> CellInputs:
    """Torch twin of `edgediff.cells.cell_inputs`: the same five inputs, on x_t's device."""
    t = torch.as_tensor(timestep, dtype=torch.int64, device=x_t.device)
    return CellInputs(
        patch=halo_patches_torch(x_t, images, cells, geom),
        global_content=pad_global_torch(pool_global_torch(x_t, geom.grid)[images], geom.halo),
        timestep=t.expand(len(images)).clone() if t.ndim == 0 else t[images],
        position=F.one_hot(cells, geom.num_cells).float(),
        snippet=snippets[images],
    )


def example_inputs(config, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Well-formed denoiser inputs as tensors, keyed by input name (edgediff.cells.example_feeds)."""
    feeds = example_feeds(config.geometry, config.snippet_dim, batch, seed)
    return {name: torch.from_numpy(feeds[name]) for name in INPUT_NAMES}


def position_map_torch(position: torch.Tensor, grid: int, patch: int, halo: int) -> torch.Tensor:
    """The one-hot position [B, grid²] drawn where its cell lies in the global content: [B, 1, p + 2m, p + 2m],
    1 on the cell's share of the p × p global content, 0 elsewhere and on the halo padding (which the global content
    has too). The global content is the whole image pooled to cell size, so cell (r, c) is the block of rows
    r·p/grid … (r+1)·p/grid there; when grid > p several cells share one pixel and each gets its share summed to 1
    over the block it covers. Made inside the network (ModelConfig.position_map), so the denoiser's five inputs and
    every bundle stay as they are."""
    where = position.reshape(position.shape[0], 1, grid, grid)
    if patch % grid == 0:
        where = F.interpolate(where, scale_factor=patch // grid, mode="nearest") if patch > grid else where
    else:  # check_position_map: grid % patch == 0
        k = grid // patch
        where = F.avg_pool2d(where, k) * (k * k)
    return F.pad(where, (halo, halo, halo, halo)) if halo else where


def check_position_map(grid: int, patch: int) -> None:
    """The map needs the cell grid to line up with the global content's pixels."""
    if patch % grid and grid % patch:
        raise ValueError(f"position_map needs the cell side ({patch}) and the grid ({grid}) to divide one another")
