"""The plumbing both quality encoders share: a cached onnxruntime session of an exported network, the antialiased
resize their preprocessing starts with, and the one cache rule for per-dataset encoder outputs.

Why its own module: `encoders` (Lite0, and the `encode` dispatcher over both networks) and `encoders_independent`
(open_nsfw) both need these; with them in `encoders`, the two modules imported each other.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.files import atomic_write_bytes


def cached_onnx_session(filename: str, build):
    """An onnxruntime CPU session of cache_dir()/encoders/FILENAME, first written by build(path) if missing.
    A damaged cache file is deleted so that the next run rebuilds it."""
    import onnxruntime as ort

    from edgediff.data import cache_dir

    d = cache_dir() / "encoders"
    d.mkdir(parents=True, exist_ok=True)
    path = d / filename
    if not path.exists():
        build(path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        path.unlink(missing_ok=True)
        raise EdgediffError(f"the cached encoder {path} was unreadable ({e}) and was deleted; run again") from e


def resized(images_u8: np.ndarray, size: int, divisor: float = 1.0):
    """uint8 [N, H, W, 3] → float torch [N, 3, size, size] ÷ `divisor`, bilinear antialiased resize: what both
    encoders' preprocessing starts with."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(images_u8, dtype=np.uint8)).permute(0, 3, 1, 2).float() / divisor  # a copy
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def cached_array(path: Path, shape: tuple, compute) -> np.ndarray:
    """Load `path` if it holds an array of `shape`, else compute it and save it atomically: the one cache rule of
    every per-dataset encoder output (pooled features, spatial maps)."""
    if path.exists():
        arr = np.load(path, allow_pickle=False)
        if arr.shape == tuple(shape):
            return arr
    arr = compute()
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())
    return arr
