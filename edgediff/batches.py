"""Training batches: one random grid cell of one (possibly mirrored) image at a random t per example.

`get_batch(step)` is a pure function of (seed, step, rank) and the data: each step draws its randomness from a
generator seeded by those three, so a resumed run replays exactly the batches an uninterrupted one would have seen,
and resume gives the same losses by construction. The denoiser's inputs themselves are built by
`edgediff.models.cells.cell_inputs_torch`, the twin of what the sampler and export calibration feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from edgediff.cells import CellGeometry, CellInputs
from edgediff.models.cells import cell_inputs_torch, split_torch
from edgediff.models.layers import alphas_cumprod_torch

if TYPE_CHECKING:
    from edgediff.data import Dataset
    from edgediff.memory_bank import Snippets
    from edgediff.model_config import ModelConfig
    from edgediff.train_config import TrainConfig


@dataclass
class Batch:
    """One step's examples: what the denoiser is fed, the noise it should predict (its cell's only, whatever the
    halo), and which image, orientation and cell each example is (what --align picks its targets by)."""

    inputs: CellInputs
    target: torch.Tensor  # [B, C, p, p]
    image: torch.Tensor  # [B] index into the dataset
    flipped: torch.Tensor  # [B] bool: the image was mirrored left-right
    cell: torch.Tensor  # [B] cell index, row * grid + col


class TrainBatches:
    """The run's images (float NCHW, on the training device) and memory snippets, served as `get_batch(step)`.

    `own` / `flipped` [N, S] are each image's snippet and its mirror's (None for a --no-memory run, which feeds the
    null snippet of width `snippet_dim`); a mirrored example is conditioned on its mirror's snippet."""

    def __init__(self, cfg: TrainConfig, rank: int, per_rank: int, data: torch.Tensor, own: torch.Tensor | None,
                 flipped: torch.Tensor | None, acp: torch.Tensor, snippet_dim: int):
        self.cfg, self.rank, self.per_rank = cfg, rank, per_rank
        self.data, self.own, self.flipped, self.acp = data, own, flipped, acp
        self.snippet_dim = snippet_dim
        self.geom = CellGeometry(cfg.image_size, data.shape[1], cfg.grid, cfg.halo)

    @classmethod
    def for_run(cls, cfg: TrainConfig, rank: int, per_rank: int, dataset: Dataset, snippets: Snippets,
                mcfg: ModelConfig, device: torch.device) -> TrainBatches:
        """The batches of a run: its dataset and bank moved to `device` once, for the whole run, noised under the
        model's own schedule (mcfg.schedule)."""
        def tensor(a):
            return torch.from_numpy(a).to(device) if a is not None else None

        return cls(cfg, rank, per_rank, tensor(dataset.as_float()), tensor(snippets.own), tensor(snippets.flipped),
                   alphas_cumprod_torch(mcfg.schedule, device=device), mcfg.snippet_dim)

    def get_batch(self, step: int) -> Batch:
        """The batch of step `step` on this rank. The draws come in a fixed order (image, flip, t, noise, cell,
        snippet dropout, then GMem's element dropout last), so adding a draw at the end changes no earlier one."""
        cfg, n, dev = self.cfg, self.per_rank, self.data.device
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 7919 + self.rank)
        idx = torch.randint(0, self.data.shape[0], (n,), generator=g).to(dev)
        flip = (torch.rand(n, generator=g) < 0.5).to(dev)
        t = torch.randint(0, self.acp.shape[0], (n,), generator=g).to(dev)
        noise = torch.randn((n, *self.data.shape[1:]), generator=g).to(dev)
        cells = torch.randint(0, cfg.grid * cfg.grid, (n,), generator=g).to(dev)
        keep = (torch.rand(n, generator=g) >= cfg.snippet_dropout).float()[:, None].to(dev)
        x0 = self.data[idx]
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        a = self.acp[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        rows = torch.arange(n, device=dev)
        snippets = self._snippets(idx, flip, keep, g)
        return Batch(inputs=cell_inputs_torch(x_t, rows, cells, t, snippets, self.geom),
                     target=split_torch(noise, cfg.grid)[rows, cells], image=idx, flipped=flip, cell=cells)

    def _snippets(self, idx: torch.Tensor, flip: torch.Tensor, keep: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Each example's snippet: its image's own, or its mirror's when flipped; zeroed where `keep` is 0 (the null
        condition guidance contrasts with); in GMem mode, also element-wise dropout rescaled like nn.Dropout."""
        if self.own is None:
            return torch.zeros(len(idx), self.snippet_dim, device=idx.device)
        sn = torch.where(flip[:, None], self.flipped[idx], self.own[idx]) * keep
        p = self.cfg.snippet_element_dropout
        if self.cfg.snippet_mode == "gmem" and p > 0:
            sn = sn * ((torch.rand(sn.shape, generator=g) >= p).float() / (1 - p)).to(sn.device)
        return sn
