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
    from edgediff.data import write_square_images

    return write_square_images(folder, n=n, size=size, seed=seed)


@pytest.fixture
def image_folder(tmp_path):
    return write_images(tmp_path / "images")


def tiny_model(**kw) -> dict:
    """ModelConfig overrides for a few-thousand-parameter network."""
    return {"dim": 8, "mults": [1, 2], "depth": 2, "snippet_dim": 8, **kw}
