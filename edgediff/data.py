"""Datasets as uint8 arrays [N, H, W, 3], cached on disk so a second run starts instantly.

Two sources: the built-in emoji set (rendered from the Noto Color Emoji font, no download) and any folder
of PNG/JPEG/WebP images. Both are composited on white, centre-cropped and resized to the requested size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.images import fit_square, to_float
from edgediff.cells import MAX_DATA_IMAGE_SIZE, MIN_DATA_IMAGE_SIZE

EMOJI_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/System/Library/Fonts/Apple Color Emoji.ttc",
)
EMOJI_RANGES = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF))
# The font's bitmaps are drawn at one size; a glyph plus its margin spans up to this many pixels. Below it a glyph's
# crop is padded (not enlarged) to the requested side, so no emoji is ever upsampled at sizes up to 128 px.
EMOJI_NATIVE_SIDE = 136
EMOJI_RENDER_VERSION = 2  # part of the cache key: v2 pads small glyphs instead of upsampling them (sizes > 51 px)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def cache_dir() -> Path:
    """Where data, features and banks are cached: $EDGEDIFF_CACHE or ~/.cache/edgediff."""
    root = Path(os.environ.get("EDGEDIFF_CACHE", Path.home() / ".cache" / "edgediff"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class Dataset:
    """uint8 images plus where they came from (the key that features and banks are cached under)."""

    images: np.ndarray  # [N, H, W, 3] uint8
    name: str
    key: str
    skipped: int = 0
    skipped_names: tuple[str, ...] = ()  # the unreadable files, relative to the folder: a count alone helps no one

    def __len__(self) -> int:
        return len(self.images)

    def content_sha256(self) -> str:
        """The images' own bytes (not file names or times): what `--resume` compares to refuse changed data."""
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    def skipped_text(self, limit: int = 3) -> str:
        """The skipped files for a log line: the first `limit` names, then "and N more" (a folder of thousands of
        broken files must not flood the log)."""
        names = list(self.skipped_names[:limit])
        rest = self.skipped - len(names)
        return ", ".join(names) + (f" and {rest} more" if rest > 0 else "")

    def as_float(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """NCHW float32 in [-1, 1]: the model's working range."""
        return to_float(self.images[idx])


def check_image_size(image_size: int) -> None:
    """The loader's range (edgediff.cells.MIN/MAX_DATA_IMAGE_SIZE), narrower than what a model may declare."""
    if not MIN_DATA_IMAGE_SIZE <= image_size <= MAX_DATA_IMAGE_SIZE:
        raise EdgediffError(
            f"--image-size {image_size} is out of range: use {MIN_DATA_IMAGE_SIZE}..{MAX_DATA_IMAGE_SIZE} (e.g. 32)"
        )


def data_spec(spec: str) -> str:
    """'emoji', or a folder as an absolute path: the form a run records, so that eval, audit, export and --resume
    find (and compare) the same images whatever directory they are started from."""
    return spec if spec == "emoji" else str(Path(spec).expanduser().resolve())


def load_dataset(spec: str, image_size: int) -> Dataset:
    """`spec` is 'emoji' or a folder path; returns the cached uint8 array at `image_size`."""
    check_image_size(image_size)
    if spec == "emoji":
        return load_emoji(image_size)
    path = Path(spec).expanduser()
    if not path.exists():
        raise EdgediffError(f"--data {spec}: no such folder; pass 'emoji' or a folder of PNG/JPEG/WebP images")
    if not path.is_dir():
        raise EdgediffError(f"--data {spec} is a file, not a folder; pass a folder of PNG/JPEG/WebP images")
    return load_folder(path, image_size)


def _save_cache(path: Path, images: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, images)
    os.replace(tmp, path)


def find_emoji_font() -> str:
    for p in EMOJI_FONT_PATHS:
        if Path(p).exists():
            return p
    raise EdgediffError(
        "the emoji font is missing: install it with 'apt-get install fonts-noto-color-emoji' "
        "(or pass --data FOLDER with your own images)"
    )


def emoji_glyphs():
    """(canvas, ink box) of every single-codepoint emoji the font draws, in a fixed order: the font's own pixels,
    before any crop or resize."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(find_emoji_font(), 109)  # a bitmap font: 109 is its only size
    for lo, hi in EMOJI_RANGES:
        for cp in range(lo, hi + 1):
            canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((8, 8), chr(cp), font=font, embedded_color=True)
            box = canvas.getbbox()
            if box is not None:
                yield canvas, box


def render_emoji(image_size: int) -> np.ndarray:
    """Render every single-codepoint emoji the font has, cropped square with a small margin. A glyph smaller than
    the requested side (up to the font's native EMOJI_NATIVE_SIDE) gets a wider transparent margin instead of being
    enlarged: at 128 px, 165 of the 1,300 glyphs would otherwise be upsampled (blurred)."""
    out = []
    for canvas, (x0, y0, x1, y1) in emoji_glyphs():
        side = max(max(x1 - x0, y1 - y0) + 8, min(image_size, EMOJI_NATIVE_SIDE))
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        crop = canvas.crop((cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side))
        out.append(np.asarray(fit_square(crop, image_size), dtype=np.uint8))
    if not out:
        raise EdgediffError("the emoji font rendered no glyphs: reinstall fonts-noto-color-emoji")
    return np.stack(out)


def load_emoji(image_size: int) -> Dataset:
    key = f"emoji_v{EMOJI_RENDER_VERSION}_{image_size}"
    path = cache_dir() / f"{key}.npy"
    if path.exists():
        images = np.load(path)
    else:
        images = render_emoji(image_size)
        _save_cache(path, images)
    return Dataset(images=images, name="emoji", key=key)


def load_folder(root: Path, image_size: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise EdgediffError(f"--data {root}: no PNG/JPEG/WebP images found; point it at a folder that has some")
    h = hashlib.sha256(str(image_size).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    key = f"folder_{h.hexdigest()[:16]}_{image_size}"
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        # a cache written before the names were recorded is read again when it skipped files, to name them
        if "skipped_names" in z.files or int(z["skipped"]) == 0:
            names = tuple(str(n) for n in z["skipped_names"]) if "skipped_names" in z.files else ()
            return Dataset(images=z["images"], name=str(root), key=key, skipped=int(z["skipped"]),
                           skipped_names=names)
    images, skipped = [], []
    for p in files:
        try:
            with Image.open(p) as img:
                images.append(np.asarray(fit_square(img, image_size), dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError):
            skipped.append(str(p.relative_to(root)))
    if not images:
        raise EdgediffError(f"--data {root}: none of the {len(files)} image files could be read; check the files")
    arr = np.stack(images)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=arr, skipped=np.int64(len(skipped)), skipped_names=np.array(skipped, dtype=str))
    os.replace(tmp, path)
    return Dataset(images=arr, name=str(root), key=key, skipped=len(skipped), skipped_names=tuple(skipped))


def write_square_images(folder: str | Path, n: int = 8, size: int = 20, seed: int = 0) -> Path:
    """A tiny folder dataset (coloured squares on white): enough structure to train on in seconds.

    Tests and benchmarks use it to make real runs without downloading or rendering anything.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.full((size, size, 3), 255, np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        img[y : y + size // 2, x : x + size // 2] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return folder
