"""The shipped default: a base install (no extras, no torch) samples real images from the bundled model."""

from __future__ import annotations

import os
import subprocess
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


@pytest.fixture(scope="module")
def base_install(tmp_path_factory):
    """One device-only venv (`pip install .`, no extras) shared by the tests below: creating it is the slow part."""
    env_dir = tmp_path_factory.mktemp("base") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    check = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert check.returncode != 0, "the base install must not pull torch"
    return env_dir


def _base_run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(env_dir / "bin" / "edgediff"), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


@pytest.mark.slow
def test_base_install_samples_without_torch(base_install, tmp_path):
    out = tmp_path / "samples.png"
    proc = _base_run(base_install, "sample", "--n", "4", "--steps", "5", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout and "peak" in proc.stdout.lower()
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.std() > 10  # an actual picture, not a blank or constant image


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train", "--steps", "1", "--out", "RUN"], ["export", "RUN", "--out", "B"],
                                     ["eval", "RUN", "--n", "4"], ["audit", "RUN", "--n", "4"]])
def test_base_install_training_commands_name_the_extra(base_install, tmp_path, command):
    """Without torch: one line naming the checkout install of the training side (edgediff is not on the package
    index, so `pip install 'edgediff[train]'` would fail), exit 2, no traceback, nothing written."""
    args = [str(tmp_path / a) if a in ("RUN", "B") else a for a in command]
    proc = _base_run(base_install, *args, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "pip install -e '.[train]'" in lines[0] and "whl/cpu" in lines[0] and command[0] in lines[0], lines
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_base_install_conveniences(base_install, tmp_path):
    """`python -m edgediff`, `--version` and `info` without an argument (the default bundle) on the device install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    version = subprocess.run([str(base_install / "bin" / "python"), "-m", "edgediff", "--version"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert version.returncode == 0 and version.stdout.strip() == "edgediff 0.1.0", version.stderr
    info = _base_run(base_install, "info", cwd=tmp_path)
    assert info.returncode == 0 and "default_bundle" in info.stdout and "data emoji" in info.stdout, info.stderr
