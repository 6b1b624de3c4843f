"""DiS and DiT: the patch denoiser as a token model whose mixer is a state-space scan (DiS) or attention (DiT).

Everything is a token (Fei et al., DiS): a time token, a grid-position token, a memory-snippet token, the global
content cut into p×p pixel tokens, then the noisy patch cut the same way; plus a learned positional embedding.
Blocks are pre-norm (RMSNorm) with a residual around one mixer: the bidirectional selective scan for
`backbone='dis'`, multi-head self-attention for `backbone='dit'` (everything else identical, so the two compare
fairly). U-ViT long skips join the in-blocks to the out-blocks through Linear(2d → d) of [h, skip]. Only the
patch tokens are un-patchified into the noise estimate; condition and global-content tokens are dropped.

Block count: depth//2 in-blocks, one mid block, depth//2 out-blocks (U-ViT's layout).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig
from edgediff.cells import crop_centre
from edgediff.models.layers import timestep_embedding
from edgediff.models.ssm import build_mixer


class RMSNorm(nn.Module):
    """x / rms(x) · w, written out so it exports to plain ONNX ops at any opset (and quantises like a Mul)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """h + mixer(RMSNorm(h)), optionally after merging a long skip: Linear(2d → d) of [h, skip]."""

    def __init__(self, config: ModelConfig, skip: bool = False):
        super().__init__()
        dim = config.dim
        self.skip = nn.Linear(2 * dim, dim) if skip else None
        self.norm = RMSNorm(dim)
        self.mixer = build_mixer(config)

    def forward(self, h: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None:
            h = self.skip(torch.cat([h, skip], dim=-1))
        return h + self.mixer(self.norm(h))


class PatchTokenNet(nn.Module):
    """Token denoiser over one cell: forward(patch, global_content, timestep, position, snippet) → eps."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.backbone not in ("dis", "dit"):
            raise ValueError(f"PatchTokenNet serves backbones dis and dit, not {config.backbone!r}")
        if config.position_map:
            raise ValueError("position_map is a UNet input channel; DiS / DiT see the position as a token")
        self.config = config
        c, dim, tp = config.channels, config.dim, config.token_patch
        p = config.input_side
        if tp < 1 or p % tp:
            raise EdgediffError(
                f"token patch {tp} does not divide the input side {p} (image {config.image_size} / grid "
                f"{config.grid} + 2 × halo {config.halo}): pick a token_patch that divides {p}"
            )
        if config.depth < 1:
            raise EdgediffError(f"--depth {config.depth} must be >= 1 for the {config.backbone} backbone")
        self.side = p // tp
        self.num_patch_tokens = self.side * self.side

        self.patch_embed = nn.Conv2d(config.patch_channels, dim, tp, stride=tp)  # a Linear on each tp×tp pixel token
        self.global_embed = nn.Conv2d(c, dim, tp, stride=tp)
        self.time_token = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.pos_token = nn.Linear(config.num_cells, dim)
        self.snippet_token = nn.Linear(config.snippet_dim, dim) if config.snippet_dim > 0 else None
        self.num_cond_tokens = 2 + (self.snippet_token is not None)
        total = self.num_cond_tokens + 2 * self.num_patch_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, total, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

        half = config.depth // 2
        self.in_blocks = nn.ModuleList([Block(config) for _ in range(half)])
        self.mid_block = Block(config)
        self.out_blocks = nn.ModuleList([Block(config, skip=True) for _ in range(half)])
        self.norm_out = RMSNorm(dim)
        self.head = nn.Linear(dim, tp * tp * c)
        nn.init.zeros_(self.head.weight)  # start as "predict zero noise", like the UNet's zeroed conv_out
        nn.init.zeros_(self.head.bias)

    def tokens(self, patch, global_content, timestep, position, snippet) -> torch.Tensor:
        """[B, cond + 2·(p/tp)², dim]: condition tokens, then global-content tokens, then patch tokens."""
        dim = self.config.dim
        cond = [self.time_token(timestep_embedding(timestep, dim)), self.pos_token(position)]
        if self.snippet_token is not None:
            cond.append(self.snippet_token(snippet))
        glob = self.global_embed(global_content).flatten(2).transpose(1, 2)
        pat = self.patch_embed(patch).flatten(2).transpose(1, 2)
        return torch.cat([torch.stack(cond, dim=1), glob, pat], dim=1) + self.pos_embed

    def forward(self, patch, global_content, timestep, position, snippet):
        h = self.tokens(patch, global_content, timestep, position, snippet)
        skips = []
        for block in self.in_blocks:
            h = block(h)
            skips.append(h)
        h = self.mid_block(h)
        for block in self.out_blocks:
            h = block(h, skips.pop())
        h = self.head(self.norm_out(h[:, -self.num_patch_tokens :]))  # drop condition + global tokens
        b, s, tp, c = h.shape[0], self.side, self.config.token_patch, self.config.channels
        h = h.reshape(b, s, s, tp, tp, c).permute(0, 5, 1, 3, 2, 4)  # [B, C, row, dy, col, dx]
        return crop_centre(h.reshape(b, c, s * tp, s * tp), self.config.halo)
