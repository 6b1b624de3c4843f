"""Checkpoint integrity: every file's sha256 is recorded in latest.json, load refuses a damaged checkpoint and names
the newest intact one, deleting the damaged files falls back to it, and export refuses non-finite EMA weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgediff.checkpoint import latest_checkpoint, load_ema_model
from edgediff.errors import EdgediffError

from conftest import tiny_model, write_images
from reliability_support import one_line


def _cfg(data: Path, out: Path, steps: int):
    from edgediff.train import TrainConfig

    return TrainConfig(data=str(data), out=str(out), image_size=16, grid=2, steps=steps, batch_size=4, memory=False,
                       sample_every=0, checkpoint_every=2, model=tiny_model(), device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    from edgediff.train import train

    root = tmp_path_factory.mktemp("ckpt")
    data = write_images(root / "images", n=8, size=16)
    train(_cfg(data, root / "run", 4), progress=False)
    return root, data


@pytest.fixture
def run(trained, tmp_path):
    root, data = trained
    copy = shutil.copytree(root / "run", tmp_path / "run")
    return copy, data


def _flip(path: Path, offset_from_end: int = 4096, length: int = 4096) -> None:
    raw = bytearray(path.read_bytes())
    start = max(len(raw) - offset_from_end - length, len(raw) // 2)
    for i in range(start, min(len(raw), start + length)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_pointer_records_sha256_of_every_kept_file(run):
    run_dir, _ = run
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert pointer["name"] == "ckpt-000004"
    assert set(pointer["checkpoints"]) == {"ckpt-000002", "ckpt-000004"}
    for name, entry in pointer["checkpoints"].items():
        assert set(entry["sha256"]) == {f"{name}.safetensors", f"{name}.json"}


def test_flipped_bytes_are_refused_naming_the_intact_checkpoint(run):
    """The damaged tensors still parse (the flip is inside the data): only the hash can catch them."""
    from edgediff.train import train

    run_dir, data = run
    _flip(run_dir / "checkpoints" / "ckpt-000004.safetensors")
    for attempt in (lambda: load_ema_model(run_dir), lambda: train(_cfg(data, run_dir, 6), resume=True,
                                                                    progress=False)):
        with pytest.raises(EdgediffError) as err:
            attempt()
        msg = str(err.value)
        assert one_line(msg) and "ckpt-000004.safetensors is damaged" in msg, msg
        assert "ckpt-000002 (step 2)" in msg, msg


def test_truncated_checkpoint_names_the_older_one_beside_it(run):
    run_dir, _ = run
    path = run_dir / "checkpoints" / "ckpt-000004.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EdgediffError) as err:
        load_ema_model(run_dir)
    assert "ckpt-000002 (step 2)" in str(err.value) and "older run" not in str(err.value), str(err.value)


def test_deleting_the_damaged_checkpoint_resumes_from_the_intact_one(run):
    from edgediff.train import train

    run_dir, data = run
    _flip(run_dir / "checkpoints" / "ckpt-000004.json", offset_from_end=0, length=8)
    with pytest.raises(EdgediffError, match="delete"):
        latest_checkpoint(run_dir)
    for suffix in (".safetensors", ".json"):
        (run_dir / "checkpoints" / f"ckpt-000004{suffix}").unlink()
    assert latest_checkpoint(run_dir)[1]["step"] == 2
    result = train(_cfg(data, run_dir, 4), resume=True, progress=False)
    assert result["steps"] == 4 and latest_checkpoint(run_dir)[1]["step"] == 4


def test_export_refuses_non_finite_ema_weights(run, tmp_path):
    """A checkpoint written intact (hashes match) but holding NaN weights: export says so instead of shipping it."""
    from edgediff.checkpoint import save_checkpoint
    from edgediff.models import ModelConfig, build_model
    from edgediff_export import ExportOptions, export_run

    run_dir, _ = run
    _, meta = latest_checkpoint(run_dir)
    model = build_model(ModelConfig.from_dict(meta["model"]))
    ema = build_model(ModelConfig.from_dict(meta["model"]))
    with torch.no_grad():
        next(ema.parameters()).fill_(float("nan"))
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(run_dir, 6, model, ema, opt, {k: v for k, v in meta.items() if k not in ("step", "optimizer")})
    out = tmp_path / "bundle"
    with pytest.raises(EdgediffError) as err:
        export_run(run_dir, out, ExportOptions(profile=False))
    assert one_line(str(err.value)) and "non-finite" in str(err.value) and "ckpt-000004 (step 4)" in str(err.value)
    assert not out.exists()
