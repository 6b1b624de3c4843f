"""Which arithmetic a training step's forward pass runs in: `train --precision auto|bf16|fp32`.

bf16 autocast keeps the weights, the optimiser and the loss in float32 and runs the convolutions and matmuls in
bfloat16. On a GPU that is the usual mixed precision. On a CPU it pays where the CPU has bf16 instructions
(AVX512-BF16 or AMX): on this repository's 2-core EPYC box it trained the default's widths 1.6x faster and 4.5 M
parameters 1.8x, with the same loss (benchmarks/results/cpu_bf16.json). Without them bf16 is emulated, which is
usually slower (not measured here). So `auto` stays float32 on every CPU (what every run before this flag was
trained with, so old runs resume unchanged) and the log says when `--precision bf16` would pay.
"""

from __future__ import annotations

import contextlib

import torch

from edgediff.train_config import PRECISIONS


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles; torch's own probes, private, so a
    torch without them reads as no)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the forward pass autocasts to on `device` (None: float32 throughout). `auto` is bf16 on CUDA and
    float32 on a CPU; `bf16` and `fp32` are taken as asked on either."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training step's forward pass runs in."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def describe(precision: str, device: torch.device) -> str:
    """The arithmetic in use, for the training log."""
    return "bf16 autocast" if autocast_dtype(precision, device) is not None else "float32"


def bf16_hint(precision: str, device: torch.device) -> str | None:
    """A line for the training log when `auto` runs float32 on a CPU that would train faster in bf16."""
    if device.type == "cpu" and precision == "auto" and cpu_has_native_bf16():
        return "this CPU has bf16 instructions: --precision bf16 trains 1.6-1.8x faster (edgediff.precision)"
    return None


__all__ = ["PRECISIONS", "autocast", "autocast_dtype", "bf16_hint", "cpu_has_native_bf16", "describe"]
