"""The UNet patch denoiser: the default backbone, small enough for a device, conditioned in every block.

Input is the noisy patch (with its halo and validity mask when the config has one) concatenated with the global
content (and, with `position_map`, a channel marking the cell's place in it); the UNet runs over the whole input side and the halo is cropped off the output. The condition vector (time,
position, memory snippet) drives a scale/shift after each GroupNorm. No attention: conv-only keeps activation
memory linear in the patch area, which is what the memory planner relies on.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgediff.model_config import ModelConfig
from edgediff.cells import crop_centre
from edgediff.models.cells import check_position_map, position_map_torch
from edgediff.models.layers import ConditionEmbedding, group_norm


class ResBlock(nn.Module):
    """GroupNorm → (1+scale, shift) from the condition → SiLU → conv, twice, with a residual."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class PatchUNet(nn.Module):
    """UNet over one cell: forward(patch, global_content, timestep, position, snippet) → predicted noise (the five
    inputs of edgediff.cells, in that order)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, dim = config.channels, config.dim
        cond_dim = 4 * dim
        self.embed = ConditionEmbedding(dim, config.num_cells, config.snippet_dim)
        self.cond_act = nn.SiLU()
        if config.position_map:
            check_position_map(config.grid, config.patch_size)
        self.conv_in = nn.Conv2d(config.patch_channels + c + int(config.position_map), dim, 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [dim]
        ch = dim
        levels = len(config.mults)
        for i, mult in enumerate(config.mults):
            out = dim * mult
            for _ in range(config.num_res_blocks):
                self.down.append(ResBlock(ch, out, cond_dim))
                ch = out
                skips.append(ch)
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, cond_dim), ResBlock(ch, ch, cond_dim)])

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(config.mults))):
            out = dim * mult
            for _ in range(config.num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), out, cond_dim))
                ch = out
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, c, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        side = config.input_side
        if side // 2 ** (levels - 1) < 1 or side % 2 ** (levels - 1):
            raise ValueError(
                f"input side {side} (cell {config.patch_size} + 2 × halo {config.halo}) cannot be halved {levels - 1} "
                "times: use fewer --mults, a smaller grid or a halo that keeps the side divisible"
            )

    @property
    def feature_block(self) -> int:
        """Index in `down` of the block whose output `forward(..., return_features=True)` also returns: the first
        block of level 1 (after one downsampling), else the last of level 0. Representation alignment (REPA,
        edgediff.align) pulls this early map towards a pretrained encoder's features."""
        return min(self.config.num_res_blocks, len(self.down) - 1)

    @property
    def feature_channels(self) -> int:
        """Channels of that feature map (what the alignment projector takes)."""
        return self.down[self.feature_block].conv2.out_channels

    def forward(self, patch, global_content, timestep, position, snippet, return_features: bool = False):
        """The noise estimate of the cell; with return_features=True, (eps, the `feature_block` output)."""
        cond = self.cond_act(self.embed(timestep, position, snippet))
        inputs = [patch, global_content]
        if self.config.position_map:
            cfg = self.config
            inputs.append(position_map_torch(position, cfg.grid, cfg.patch_size, cfg.halo))
        h = self.conv_in(torch.cat(inputs, dim=1))
        hs = [h]
        nres = self.config.num_res_blocks
        blocks = iter(enumerate(self.down))
        feature = None
        for i in range(len(self.config.mults)):
            for _ in range(nres):
                k, block = next(blocks)
                h = block(h, cond)
                feature = h if k == self.feature_block else feature
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, cond)
        blocks = iter(self.up)
        for i in range(len(self.config.mults)):
            for _ in range(nres + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), cond)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](h)
        eps = crop_centre(self.conv_out(F.silu(self.norm_out(h))), self.config.halo)
        return (eps, feature) if return_features else eps
