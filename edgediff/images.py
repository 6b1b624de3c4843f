"""Writing images: a square-ish grid PNG, always atomically (temp file, then rename), never a partial file."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError


def make_grid(images_u8: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """[N, H, W, 3] uint8 → one [rows·(H+pad)+pad, cols·(W+pad)+pad, 3] sheet on a white background."""
    n, h, w, c = images_u8.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        sheet[y : y + h, x : x + w] = images_u8[k]
    return sheet


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder; a clear error if the disk says no."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise EdgediffError(f"cannot write {path}: {e.strerror or e}; choose a writable location with free space") from e
    return path


def save_png(image_u8: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Save one HWC uint8 image as PNG atomically, optionally upscaled (nearest) so small samples are visible."""
    import io

    from PIL import Image

    img = Image.fromarray(image_u8)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
