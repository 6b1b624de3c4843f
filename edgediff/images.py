"""Images as uint8 arrays and files: the conversions between uint8 pixels and the models' [-1, 1] floats, a
square-ish grid, and writing, always atomically (edgediff.files), never a partial file.

Numpy and pillow only: the device sampler converts and writes through here without importing the training side.
Paths the user names are checked before any work (`check_output_file`, `check_output_dir`): the format
comes from the extension, and no folder is ever created implicitly except an --out-dir itself.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError, Interrupted
from edgediff.files import atomic_write_bytes


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] uint8 → [N, 3, H, W] float32 in [-1, 1]: the models' pixel range (`to_uint8` is its inverse)."""
    return images_u8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] float in [-1, 1] → [N, H, W, 3] uint8 (rounded, clipped)."""
    x = np.clip((np.asarray(images) + 1.0) * 127.5 + 0.5, 0, 255)
    return x.astype(np.uint8).transpose(0, 2, 3, 1)


UPSCALE_BLUR_PER_FACTOR = 0.25  # σ of the smoothing after an upscale, in output pixels per unit of the factor


def resize(images_u8: np.ndarray, side: int, smooth_upscale: bool = True) -> np.ndarray:
    """[N, H, W, 3] uint8 → [N, side, side, 3] uint8, bicubic (pillow): how a cascade hands a small model's images
    to a larger one, and how `sample --init` fits a picture to the bundle. Images already at `side` are returned.

    An upscale by a factor f is then smoothed by a Gaussian of σ = f/4 output pixels (`smooth_upscale`). Why: an
    enlarged image holds no detail finer than its source pixels, but any interpolation leaves a pattern at their
    period (bicubic: the steepest step of each source pixel falls on every f-th line). A model redrawing the image
    takes that pattern for detail and sharpens it into f × f blocks: the 128 px cascade's pixel steps were 1.2-1.3×
    the average on every 4th line. σ = f/4 damps the period-f pattern to 29% of its amplitude; σ = f/2 (under 1%)
    left no pattern at all but blurred enough to cost 7% FD-independent, f/4 costs 3% against no smoothing
    (benchmarks/results/cascade_shift*.json, docs/scale.md)."""
    if images_u8.shape[1:3] == (side, side):
        return images_u8
    from PIL import Image, ImageFilter

    factor = side / images_u8.shape[2]
    blur = ImageFilter.GaussianBlur(UPSCALE_BLUR_PER_FACTOR * factor) if smooth_upscale and factor > 1 else None
    out = []
    for im in images_u8:
        big = Image.fromarray(im).resize((side, side), Image.BICUBIC)
        out.append(np.asarray(big if blur is None else big.filter(blur)))
    return np.stack(out)


def fit_square(img, side: int):
    """A pillow image as the models see pictures: composited on white, centre-cropped to a square, resized to
    `side` with a good filter (Lanczos). The one rule for training data and for `sample --init`."""
    from PIL import Image

    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, img).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((side, side), Image.Resampling.LANCZOS)


def read_image(path: str | Path, side: int, flag: str = "--init") -> np.ndarray:
    """One picture file as [1, side, side, 3] uint8 (fit_square): a missing or unreadable file is a one-line error
    naming `flag`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(fit_square(im, side), dtype=np.uint8)[None]
    except FileNotFoundError:
        raise EdgediffError(f"{flag} {path}: no such file; pass a PNG, JPEG or WebP picture") from None
    except (UnidentifiedImageError, OSError) as e:
        raise EdgediffError(f"{flag} {path} is not a picture pillow can read ({str(e)[:80]}); pass a PNG, JPEG or "
                            "WebP picture") from None


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


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | Path, flag: str = "--out") -> str:
    """PIL format name from the file extension; an unknown extension is the user's error, named with the fix."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise EdgediffError(f"{flag} {path}: unknown image extension {Path(path).suffix or '(none)'!r}; use .png, "
                            ".jpg/.jpeg or .webp")
    return fmt


def _writable_dir(folder: Path, flag: str, named: str | Path) -> None:
    """A real probe (create and remove a temp file), not os.access: root passes every access check, and /proc or a
    read-only mount only say no when asked to write."""
    if not folder.is_dir():
        raise EdgediffError(f"cannot write {flag} {named}: the folder {folder} does not exist; create it first or "
                            "choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgediff-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EdgediffError(f"cannot write {flag} {named}: {e.strerror or e} in {folder}; choose a writable "
                            "location") from None


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output image that could not be written: unknown format, a directory, a
    missing or unwritable folder. (The file itself is replaced by a rename, so its own mode does not matter.)"""
    path = Path(path)
    if path.is_dir() or (not path.suffix and not path.exists()):  # a folder, or a name that reads as one
        what = "it is a directory" if path.is_dir() else "it has no image extension (a folder?)"
        raise EdgediffError(f"cannot write {flag} {path}: {what}; name an image file, e.g. "
                            f"{path / 'samples.png'}, or use --out-dir {path} for one file per image")
    image_format(path, flag)
    _writable_dir(path.parent, flag, path)
    return path


def check_output_dir(folder: str | Path, flag: str = "--out-dir") -> Path:
    """Refuse, before any work, an output folder that could not be written; only the folder itself may be new."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise EdgediffError(f"cannot write {flag} {folder}: it is a file; name a folder")
        _writable_dir(folder, flag, folder)
    else:
        _writable_dir(folder.parent, flag, folder)
    return folder


def _encode(image_u8: np.ndarray, fmt: str, scale: int) -> bytes:
    import io

    from PIL import Image

    img = Image.fromarray(image_u8)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def save_image(image_u8: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Save one HWC uint8 image at a user-named path, in the format its extension names, atomically; the folder
    must exist (check_output_file said so before the work began)."""
    return atomic_write_bytes(path, _encode(image_u8, image_format(path), scale), make_parents=False)


def save_png(image_u8: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Save one HWC uint8 image as PNG atomically, optionally upscaled (nearest) so small samples are visible."""
    return atomic_write_bytes(path, _encode(image_u8, "PNG", scale))


def image_name(seed: int, index: int) -> str:
    """The file of image `index` of a run with `seed`: enough to regenerate exactly that image."""
    return f"seed{seed}_{index:04d}.png"


def _make_out_dir(out_dir: str | Path) -> Path:
    """Create --out-dir itself (its parent must exist: check_output_dir said so before the work began)."""
    try:
        Path(out_dir).mkdir(exist_ok=True)
    except OSError as e:
        raise EdgediffError(f"cannot write --out-dir {out_dir}: {e.strerror or e}; choose a writable folder") from None
    return Path(out_dir)


class FolderWriter:
    """Writes the images of one run into --out-dir as each pass finishes (each file atomic, named by
    `image_name`), so that Ctrl-C keeps every finished image instead of none; the folder is created only when the
    first image is ready."""

    def __init__(self, folder: str | Path, seed: int, total: int):
        self.folder, self.seed, self.total, self.written = Path(folder), seed, total, 0

    def write(self, start: int, images_u8: np.ndarray) -> None:
        """Save images `start`, `start + 1`, ... (the `on_images` callback of BundleSampler.run)."""
        if self.written == 0:
            _make_out_dir(self.folder)
        for i, im in enumerate(images_u8):
            save_image(im, self.folder / image_name(self.seed, start + i))
            self.written += 1

    def kept(self) -> str:
        """What an interrupt leaves, for its one line: the finished images and where they are, or nothing."""
        if self.written == 0:
            return "no image written"
        last = image_name(self.seed, self.written - 1)
        return (f"kept {self.written} of {self.total} image(s) in {self.folder} ({image_name(self.seed, 0)} to "
                f"{last}), each complete")


def write_images(images_u8: np.ndarray, out: str | Path | None, out_dir: str | Path | None,
                 seed: int = 0) -> list[Path]:
    """The grid at `out` (format from its extension) and, with `out_dir`, every image as its own PNG named by
    `image_name`; each file atomic. Only `out_dir` itself may be created; Ctrl-C says how far it got."""
    paths: list[Path] = []
    total = (out is not None) + (len(images_u8) if out_dir is not None else 0)
    try:
        if out is not None:
            paths.append(save_image(make_grid(images_u8), out))
        if out_dir is not None:
            _make_out_dir(out_dir)
            for i, im in enumerate(images_u8):
                paths.append(save_image(im, Path(out_dir) / image_name(seed, i)))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while writing images: {len(paths)} of {total} files written, each complete"
                          ) from None
    return paths
