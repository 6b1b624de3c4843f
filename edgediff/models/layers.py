"""Pieces every backbone shares: torch views of the numpy geometry/schedule, and the conditioning embedding."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgediff.interface import INPUT_NAMES, CellGeometry, example_feeds
from edgediff.schedule import Schedule


def alphas_cumprod_torch(schedule: Schedule = Schedule(), device: str | torch.device = "cpu") -> torch.Tensor:
    """The numpy ᾱ table as a float32 tensor: one definition, converted, never re-derived."""
    return torch.from_numpy(schedule.alphas_cumprod()).float().to(device)


def split_torch(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.patches.split` ([N,C,H,W] → [N, grid², C, p, p]); a test holds them equal."""
    n, c, h, w = images.shape
    p = h // grid
    x = images.reshape(n, c, grid, p, grid, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, p, p)


def stitch_torch(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.patches.stitch`."""
    n, _, c, p, _ = cells.shape
    return cells.reshape(n, grid, grid, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, grid * p, grid * p)


def halo_patches_torch(images: torch.Tensor, cells: torch.Tensor, geom: CellGeometry) -> torch.Tensor:
    """Torch twin of `edgediff.interface.halo_patches` for one cell per image ([N,C,H,W], [N] → [N, C(+1), s, s]):
    pad once with zeros (and a validity channel), then gather each crop with index grids."""
    n, c = images.shape[:2]
    m, s, p = geom.halo, geom.side, geom.patch
    x = torch.cat([images, torch.ones_like(images[:, :1])], dim=1) if m else images
    x = F.pad(x, (m, m, m, m))
    offs = torch.arange(s, device=images.device)
    ys = (cells // geom.grid * p)[:, None] + offs  # [N, s] rows of the padded image
    xs = (cells % geom.grid * p)[:, None] + offs
    rows = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=images.device)[None, :, None, None]
    return x[rows, chans, ys[:, None, :, None], xs[:, None, None, :]]


def pad_global_torch(glob: torch.Tensor, halo: int) -> torch.Tensor:
    """Torch twin of `edgediff.interface.pad_global`."""
    return F.pad(glob, (halo, halo, halo, halo)) if halo else glob


def pool_global_torch(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Torch twin of `edgediff.patches.pool_global`."""
    return F.avg_pool2d(images, kernel_size=grid) if grid > 1 else images


def position_map_torch(position: torch.Tensor, grid: int, patch: int, halo: int) -> torch.Tensor:
    """The one-hot position [B, grid²] drawn where its cell lies in the global content: [B, 1, p + 2m, p + 2m],
    1 on the cell's share of the p × p global content, 0 elsewhere and on the halo padding (which the global content
    has too). The global content is the whole image pooled to cell size, so cell (r, c) is the block of rows
    r·p/grid … (r+1)·p/grid there; when grid > p several cells share one pixel and each gets its share summed to 1
    over the block it covers. Made inside the network so the denoiser's inputs (and every bundle) stay the same."""
    where = position.reshape(position.shape[0], 1, grid, grid)
    if patch % grid == 0:
        where = F.interpolate(where, scale_factor=patch // grid, mode="nearest") if patch > grid else where
    else:  # validated: grid % patch == 0
        k = grid // patch
        where = F.avg_pool2d(where, k) * (k * k)
    return F.pad(where, (halo, halo, halo, halo)) if halo else where


def check_position_map(grid: int, patch: int) -> None:
    """The map needs the cell grid to line up with the global content's pixels."""
    if patch % grid and grid % patch:
        raise ValueError(f"position_map needs the cell side ({patch}) and the grid ({grid}) to divide one another")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (any int/float dtype) → [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ConditionEmbedding(nn.Module):
    """timestep ⊕ one-hot position → 4·dim, plus the memory snippet projected and added (GMem).

    Follows the patch-diffusion paper: time and position each go through Linear+GELU, are concatenated and
    mapped to 4·dim; the snippet (zeros = null condition) is added after its own projection.
    """

    def __init__(self, dim: int, num_cells: int, snippet_dim: int):
        super().__init__()
        self.dim = dim
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.pos = nn.Sequential(nn.Linear(num_cells, dim), nn.GELU())
        self.join = nn.Sequential(nn.Linear(2 * dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, 4 * dim))
        self.snippet = nn.Linear(snippet_dim, 4 * dim) if snippet_dim > 0 else None

    def forward(self, timestep: torch.Tensor, position: torch.Tensor, snippet: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.time(timestep_embedding(timestep, self.dim)), self.pos(position)], dim=-1)
        h = self.join(h)
        if self.snippet is not None:
            h = h + self.snippet(snippet)
        return h


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide the channel count (tiny test models have few channels)."""
    groups = math.gcd(8, channels)
    return nn.GroupNorm(groups, channels)


def example_inputs(config, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Well-formed denoiser inputs as tensors, keyed by input name (edgediff.interface.example_feeds)."""
    feeds = example_feeds(config.geometry, config.snippet_dim, batch, seed)
    return {name: torch.from_numpy(feeds[name]) for name in INPUT_NAMES}

