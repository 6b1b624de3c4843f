"""The selective scan (Mamba-2 "state-space duality" form) and the bidirectional mixer built on it, pure PyTorch.

Why this form: the CUDA `mamba-ssm` kernels do not build here and do not export; a step-by-step recurrence
exports either as an ONNX Loop (slow, poorly optimised) or unrolled over every token (a huge graph). The SSD form
computes the same recurrence chunk by chunk with ops every runtime has: cumsum, exp, a lower-triangular mask and
batched matmul inside a chunk, plus one short carry of the state from chunk to chunk. Cost stays linear in the
sequence length L: the intra-chunk work is L·Q for a fixed chunk length Q, and the carry is L/Q small updates.

Recurrence (per batch b, head h, with A_h < 0 a scalar per head, as in Mamba-2):
    state_t = exp(Δ_t·A_h) · state_{t-1} + Δ_t · x_t ⊗ B_t        (state: [P, N])
    y_t     = state_t · C_t  (+ D_h · x_t, added by the caller)
`ssd_sequential` is that loop written literally; tests hold `ssd_chunked` equal to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., Q] → [..., Q, Q] with out[i, j] = a[j+1] + ... + a[i] for j <= i and -inf above the diagonal.

    Formed as cumsum(a)[i] - cumsum(a)[j] inside one chunk: the chunk is short (16 by default), so the sums stay
    small enough for fp32 (tests hold the result to the sequential scan even for fast decay), and it costs one
    subtraction instead of a Q×Q cumsum. The mask goes on before exp so nothing above the diagonal overflows.
    """
    q = a.shape[-1]
    cum = torch.cumsum(a, dim=-1)
    diff = cum.unsqueeze(-1) - cum.unsqueeze(-2)
    keep = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=0)
    return diff.masked_fill(~keep, float("-inf"))


def ssd_chunked(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk: int = 16
) -> torch.Tensor:
    """Selective scan in chunked SSD form.

    x [b, L, H, P], dt [b, L, H] (> 0), A [H] (< 0), B and C [b, L, N] (one group shared by all heads)
    → y [b, L, H, P] (without the D skip). L need not be a multiple of `chunk`: the tail is zero-padded, and a
    padded step has Δ = 0 (no decay, no input), so it changes nothing before it.
    """
    b, length, h, p = x.shape
    n = B.shape[-1]
    q = min(chunk, length)
    pad = (-length) % q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    nc = (length + pad) // q

    xdt = (x * dt.unsqueeze(-1)).reshape(b, nc, q, h, p).permute(0, 3, 1, 2, 4)  # [b, H, nc, Q, P]
    a = (dt * A).reshape(b, nc, q, h).permute(0, 3, 1, 2)  # [b, H, nc, Q]
    Bc = B.reshape(b, 1, nc, q, n)
    Cc = C.reshape(b, 1, nc, q, n)
    a_cum = torch.cumsum(a, dim=-1)

    # 1. within each chunk: y = (C Bᵀ ∘ decay mask) · (Δx)
    decay = torch.exp(segsum(a))  # [b, H, nc, Q, Q], zero above the diagonal
    scores = torch.matmul(Cc, Bc.transpose(-1, -2))  # [b, 1, nc, Q, Q]
    y = torch.matmul(scores * decay, xdt)  # [b, H, nc, Q, P]

    # 2. the state each chunk leaves behind on its own: Σ_s exp(a_cum[-1] - a_cum[s]) Δx_s ⊗ B_s
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, H, nc, Q]
    chunk_states = torch.matmul((xdt * to_end.unsqueeze(-1)).transpose(-1, -2), Bc)  # [b, H, nc, P, N]

    # 3. carry the state across chunks: a short recurrence over nc = L/Q steps (linear in L)
    # (unbind once rather than index per step: fewer nodes in the exported graph)
    chunk_decay = torch.exp(a_cum[..., -1:]).unsqueeze(-1)  # [b, H, nc, 1, 1]
    state = torch.zeros_like(chunk_states[:, :, 0])
    entering = []
    for dec, new in zip(chunk_decay.unbind(2), chunk_states.unbind(2)):
        entering.append(state)
        state = dec * state + new
    states_in = torch.stack(entering, dim=2)  # [b, H, nc, P, N]

    # 4. what the entering state contributes inside each chunk: exp(a_cum[t]) · C_t · state
    y = y + torch.matmul(Cc, states_in.transpose(-1, -2)) * torch.exp(a_cum).unsqueeze(-1)
    y = y.permute(0, 2, 3, 1, 4).reshape(b, nc * q, h, p)
    return y[:, :length]


def ssd_sequential(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The recurrence written token by token: the reference `ssd_chunked` is held to (slow, never exported)."""
    b, length, h, p = x.shape
    n = B.shape[-1]
    state = x.new_zeros(b, h, p, n)
    out = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # [b, H]
        inp = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * B[:, t, None, None, :]  # [b, H, P, N]
        state = decay[..., None, None] * state + inp
        out.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]))
    return torch.stack(out, dim=1)


class ScanBranch(nn.Module):
    """One scan direction: short causal depthwise conv, then input-dependent Δ, B, C and the selective scan."""

    def __init__(self, inner: int, heads: int, d_state: int, d_conv: int = 4, chunk: int = 16):
        super().__init__()
        self.heads, self.d_state, self.chunk = heads, d_state, chunk
        self.conv = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(inner, heads + 2 * d_state, bias=False)
        # Mamba's initialisation: Δ log-uniform in [1e-3, 1e-1] through softplus, A_h in [-16, -1].
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, inner = x.shape
        xc = self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2)
        xc = F.silu(xc)
        dt, Bm, Cm = torch.split(self.x_proj(xc), [self.heads, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log)
        xh = xc.reshape(b, length, self.heads, inner // self.heads)
        y = ssd_chunked(xh, dt, A, Bm, Cm, self.chunk) + xh * self.D[:, None]
        return y.reshape(b, length, inner)


class BiSSMMixer(nn.Module):
    """Bidirectional Mamba mixer (as in Vim/DiS): shared in/out projections, a forward and a backward scan with
    their own conv and Δ, B, C, outputs summed and gated by SiLU(z). Linear in the number of tokens."""

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, headdim: int = 64,
                 chunk: int = 16):
        super().__init__()
        inner = expand * dim
        heads = inner // headdim if inner % headdim == 0 else 1
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.fwd = ScanBranch(inner, heads, d_state, d_conv, chunk)
        self.bwd = ScanBranch(inner, heads, d_state, d_conv, chunk)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(u).chunk(2, dim=-1)
        y = self.fwd(x) + self.bwd(x.flip(1)).flip(1)
        return self.out_proj(y * F.silu(z))


class AttentionMixer(nn.Module):
    """The attention twin of `BiSSMMixer`: same in-projection + SiLU gate + out-projection shape, with multi-head
    self-attention in place of the scans (quadratic in the number of tokens)."""

    def __init__(self, dim: int, headdim: int = 32):
        super().__init__()
        self.heads = dim // headdim if dim % headdim == 0 and dim >= headdim else 1
        self.in_proj = nn.Linear(dim, 4 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, length, dim = u.shape
        q, k, v, z = self.in_proj(u).chunk(4, dim=-1)
        q, k, v = (t.reshape(b, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, dim)
        return self.out_proj(y * F.silu(z))


def build_mixer(config) -> nn.Module:
    """The mixer of `config.backbone`: 'dis' → bidirectional SSM, 'dit' → attention (same block shape around
    either), with the constants the config records."""
    if config.backbone == "dis":
        return BiSSMMixer(config.dim, d_state=config.d_state, expand=config.ssm_expand, d_conv=config.ssm_conv,
                          headdim=config.ssm_headdim, chunk=config.ssm_chunk)
    if config.backbone == "dit":
        return AttentionMixer(config.dim, headdim=config.attn_headdim)
    raise ValueError(f"unknown mixer {config.backbone!r}: use dis or dit")
