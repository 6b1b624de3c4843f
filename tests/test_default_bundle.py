"""The shipped default: a base install (no extras, no torch) samples real images from the bundled model."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from edgediff.bundle import open_bundle

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "edgediff" / "default_bundle"


def test_default_bundle_is_valid_and_small():
    manifest = open_bundle(DEFAULT)  # sha256 of every file checked
    total = sum(p.stat().st_size for p in DEFAULT.iterdir() if p.is_file() and not p.name.endswith(".py"))
    assert total <= 12 * 2**20
    assert manifest.grid >= 2 and manifest.image_size >= 32 and manifest.lut is not None
    assert "edgediff train" in manifest.training.get("command", "")
    assert manifest.sampling.get("guidance", 1.0) > 1.0  # the shipped default samples with memory-bank guidance


@pytest.mark.slow
def test_base_install_samples_without_torch(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    check = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert check.returncode != 0, "the base install must not pull torch"
    out = tmp_path / "samples.png"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(env_dir / "bin" / "edgediff"), "sample", "--n", "4", "--steps", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout and "peak" in proc.stdout.lower()
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.std() > 10  # an actual picture, not a blank or constant image
