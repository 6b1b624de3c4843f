"""Representation alignment (REPA, as every GMem training config uses it): `--align WEIGHT`.

A small projector maps an early UNet feature map of the noisy cell to the spatial features of the *clean* image
from a frozen pretrained encoder, and the loss is their negative cosine, per spatial position. The denoiser thus
learns semantic features early, which is where GMem's and REPA's training speed-ups come from. GMem aligns an
early block's hidden state to the encoder's patch features; here each training cell is aligned to its own region
of the encoder's map (cell (r, c) of a grid-g image ↔ rows r·M/g…, cols c·M/g… of an M×M map).

Encoder: EfficientNet-Lite0 (the bank's network; never the independent metric's), the output of its last
inverted-residual block (320 channels, before the 1×1 head that makes the pooled 1280-d feature) at 256 px input,
which gives an 8×8 map (stride 32) that grids 1, 2, 4 and 8 divide. 320 rather than 1280 channels keeps the
cache small (two orientations × N × 320 × 64 float16: 53 MB for 1,300 images). Computed once per dataset and
orientation (flipped images get their own map) and cached beside the pooled features.

The projector lives outside the model: it is trained, checkpointed and restored with the run (so resume stays
exact), and export never sees it — the device graph does not change.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgediff.errors import EdgediffError
from edgediff.cells import crop_centre

ALIGN_INPUT = 256  # Lite0 input size for the spatial map: 256 / 32 = 8×8
ALIGN_CHANNELS = 320
MAP_SIZE = ALIGN_INPUT // 32
HIDDEN = 256


def _lite0_block_map(images_u8: np.ndarray, batch: int = 32) -> np.ndarray:
    """[N, H, W, 3] uint8 → [N, 320, 8, 8] float16: Lite0 stem + blocks (no head) at 256 px, torch."""
    from edgediff.encoders import _load_model, preprocess

    model = _load_model()
    out = np.empty((len(images_u8), ALIGN_CHANNELS, MAP_SIZE, MAP_SIZE), dtype=np.float16)
    with torch.no_grad():
        for s in range(0, len(images_u8), batch):
            x = torch.from_numpy(preprocess(images_u8[s : s + batch], size=ALIGN_INPUT))
            x = model._swish(model._bn0(model._conv_stem(x)))
            for block in model._blocks:  # drop-connect is off in eval mode
                x = block(x)
            out[s : s + len(x)] = x.numpy().astype(np.float16)
    return out


def spatial_targets(dataset, flipped: bool = False) -> np.ndarray:
    """The encoder map of every image of `dataset` (or of its flips) [N, 320, 8, 8] float16, computed once, cached."""
    from edgediff.data import cache_dir
    from edgediff.encoder_io import cached_array

    d = cache_dir() / "features"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"align_lite0_blocks{ALIGN_INPUT}_{dataset.key}{'_flip' if flipped else ''}.npy"
    images = dataset.images[:, :, ::-1] if flipped else dataset.images
    return cached_array(path, (len(dataset), ALIGN_CHANNELS, MAP_SIZE, MAP_SIZE),
                        lambda: _lite0_block_map(np.ascontiguousarray(images)))


class AlignProjector(nn.Module):
    """1×1-conv MLP (GMem/REPA use a 3-layer MLP with SiLU) from UNet channels to the encoder's 320 channels."""

    def __init__(self, in_ch: int, out_ch: int = ALIGN_CHANNELS, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
                                 nn.Conv2d(hidden, out_ch, 1))

    def forward(self, h: torch.Tensor, size: int) -> torch.Tensor:
        return self.net(F.adaptive_avg_pool2d(h, size))


def cell_regions(maps: torch.Tensor, cells: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, M, M] maps → [B, C, M/grid, M/grid]: each example's own cell region (the cell split of the map)."""
    from edgediff.models.cells import split_torch

    return split_torch(maps, grid)[torch.arange(len(maps), device=maps.device), cells]


def negative_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and positions of −cos(pred, target) along channels (REPA's loss; −1 = perfectly aligned)."""
    return -F.cosine_similarity(pred.float(), target.float(), dim=1).mean()


class Aligner:
    """The projector and the cached encoder maps; `loss(feature, batch)` scores the early UNet feature map that
    `model(*inputs, return_features=True)` returns against each example's own region of its clean image's map."""

    def __init__(self, model: nn.Module, dataset, grid: int, device):
        if not hasattr(model, "feature_channels"):
            raise EdgediffError("--align needs the unet backbone (it reads an early UNet feature map)")
        if MAP_SIZE % grid:
            raise EdgediffError(f"--align needs a grid that divides {MAP_SIZE} (1, 2, 4 or 8), not {grid}")
        self.grid = grid
        self.size = MAP_SIZE // grid
        geom = model.config.geometry
        # with halo cells the UNet sees p + 2·halo pixels: align only the centre (the cell itself)
        self.crop_frac = geom.halo / geom.side
        self.projector = AlignProjector(model.feature_channels).to(device)
        self.own = torch.from_numpy(spatial_targets(dataset)).to(device)
        self.flipped = torch.from_numpy(spatial_targets(dataset, flipped=True)).to(device)

    def loss(self, feature: torch.Tensor, batch) -> torch.Tensor:
        """Negative cosine between the projected `feature` and the encoder map of each example's image (its mirror
        when the example was flipped), cut to the example's cell; `batch` is an edgediff.batches.Batch."""
        maps = torch.where(batch.flipped[:, None, None, None], self.flipped[batch.image], self.own[batch.image])
        target = cell_regions(maps, batch.cell, self.grid)
        c = int(round(self.crop_frac * feature.shape[-1]))
        pred = self.projector(crop_centre(feature, c), self.size)
        return negative_cosine(pred, target)
