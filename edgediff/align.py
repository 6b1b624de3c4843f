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
    from edgediff.encoders import cached_array

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
    """Hooks an early UNet block, holds the projector and the cached targets; `loss(choice)` after each forward."""

    def __init__(self, model: nn.Module, dataset, grid: int, device):
        if not hasattr(model, "down") or len(model.down) == 0:
            raise EdgediffError("--align needs the unet backbone (it reads an early UNet feature map)")
        if MAP_SIZE % grid:
            raise EdgediffError(f"--align needs a grid that divides {MAP_SIZE} (1, 2, 4 or 8), not {grid}")
        nres = model.config.num_res_blocks
        k = min(nres, len(model.down) - 1)  # the first block of level 1 (after one downsampling), else level 0
        block = model.down[k]
        self.grid = grid
        self.size = MAP_SIZE // grid
        geom = model.config.geometry
        # with halo cells the UNet sees p + 2·halo pixels: align only the centre (the cell itself)
        self.crop_frac = geom.halo / geom.side
        self.projector = AlignProjector(block.conv2.out_channels).to(device)
        self.own = torch.from_numpy(spatial_targets(dataset)).to(device)
        self.flipped = torch.from_numpy(spatial_targets(dataset, flipped=True)).to(device)
        self._feature: torch.Tensor | None = None
        block.register_forward_hook(lambda _m, _i, out: setattr(self, "_feature", out))

    def loss(self, choice) -> torch.Tensor:
        idx, flip, cells = choice
        if self._feature is None:
            raise EdgediffError("internal: the aligned UNet block did not run before Aligner.loss")
        maps = torch.where(flip[:, None, None, None], self.flipped[idx], self.own[idx])
        target = cell_regions(maps, cells, self.grid)
        h = self._feature
        c = int(round(self.crop_frac * h.shape[-1]))
        pred = self.projector(crop_centre(h, c), self.size)
        self._feature = None
        return negative_cosine(pred, target)
