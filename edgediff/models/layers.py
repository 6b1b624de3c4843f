"""Pieces every backbone shares: the torch view of the numpy schedule, and the conditioning embedding.

The torch views of the cell geometry live in `edgediff.models.cells`, beside the inputs they build."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgediff.schedule import Schedule


def alphas_cumprod_torch(schedule: Schedule = Schedule(), device: str | torch.device = "cpu") -> torch.Tensor:
    """The numpy ᾱ table as a float32 tensor: one definition, converted, never re-derived."""
    return torch.from_numpy(schedule.alphas_cumprod()).float().to(device)


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

