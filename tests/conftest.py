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


def train_tiny_run(root, memory: bool, halo: int = 0):
    """A real (tiny) trained run on disk: the export tests and the int8 tests share one (session fixtures below)."""
    from edgediff.train import TrainConfig, train

    images = write_images(root / "images", n=8)
    feats = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    np.save(root / "feats.npy", feats)
    cfg = TrainConfig(data=str(images), out=str(root / "run"), image_size=16, grid=2, steps=40, batch_size=8,
                      memory=memory, features=str(root / "feats.npy") if memory else None, sample_every=0,
                      checkpoint_every=40, lr=2e-3, model=tiny_model(), halo=halo)
    train(cfg, progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export_run"), memory=True)


@pytest.fixture(scope="session")
def bundle(run_dir, tmp_path_factory):
    """The tiny run exported with fp32 + int8 + LUT + memory profile (the ONNX files the int8 tests edit)."""
    from edgediff_export import ExportOptions, export_run

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_run(run_dir, out, ExportOptions(int8=True, lut_bytes=4, profile=True, int8_images=32))
    return out
