"""Shared fixtures: a private cache per test session and a tiny on-disk image folder."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep dataset/feature caches of the tests out of the user's ~/.cache."""
    import os

    path = tmp_path_factory.mktemp("edgediff_cache")
    old = os.environ.get("EDGEDIFF_CACHE")
    os.environ["EDGEDIFF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EDGEDIFF_CACHE", None)
    else:
        os.environ["EDGEDIFF_CACHE"] = old


def write_images(folder, n: int = 8, size: int = 20, seed: int = 0):
    """Simple structured images (coloured squares on white) so a model has something to learn."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.full((size, size, 3), 255, np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        img[y : y + size // 2, x : x + size // 2] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path):
    return write_images(tmp_path / "images")


def tiny_model(**kw) -> dict:
    """ModelConfig overrides for a few-thousand-parameter network."""
    return {"dim": 8, "mults": [1, 2], "depth": 2, "snippet_dim": 8, **kw}
