"""`train --precision`: which arithmetic each setting runs on each device, that bf16 on a CPU really trains in bf16
(and resumes exactly), and that a run's precision is one of the settings a resume may not change silently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgediff import precision
from edgediff.errors import EdgediffError
from edgediff.train import TrainConfig, train

from conftest import tiny_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("setting, device, dtype", [
    ("auto", CPU, None), ("auto", CUDA, torch.bfloat16), ("bf16", CPU, torch.bfloat16),
    ("bf16", CUDA, torch.bfloat16), ("fp32", CPU, None), ("fp32", CUDA, None)])
def test_each_setting_picks_its_arithmetic(setting, device, dtype):
    assert precision.autocast_dtype(setting, device) is dtype


def test_auto_on_a_cpu_names_the_flag_only_where_bf16_is_native(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert "--precision bf16" in precision.bf16_hint("auto", CPU)
    assert precision.bf16_hint("bf16", CPU) is None and precision.bf16_hint("auto", CUDA) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.bf16_hint("auto", CPU) is None


def test_an_unknown_precision_is_refused_in_one_line():
    with pytest.raises(EdgediffError, match=r"^--precision half: use auto, bf16, fp32$"):
        TrainConfig(precision="half").validate()


def test_the_recorded_command_names_a_precision_that_is_not_auto():
    assert "--precision" not in TrainConfig().command()
    assert TrainConfig(precision="bf16").command().endswith("--precision bf16 --out runs/default")


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(tmp_path / "run"), image_size=16, grid=2, steps=6, batch_size=8,
                memory=False, sample_every=0, checkpoint_every=3, lr=2e-3, warmup_steps=5, model=tiny_model(),
                device="cpu", precision="bf16")
    return TrainConfig(**{**base, **kw})


def test_bf16_on_a_cpu_trains_in_bf16_and_resumes_exactly(tmp_path, image_folder):
    full = train(_cfg(tmp_path / "a", image_folder), progress=False)
    fp32 = train(_cfg(tmp_path / "f", image_folder, precision="fp32"), progress=False)
    assert full["autocast"] == "bfloat16" and fp32["autocast"] == "float32"
    # bf16 rounds the convolutions: the losses move, but only by what bf16's 8 bits of mantissa allow
    assert full["losses"] != fp32["losses"]
    np.testing.assert_allclose(full["losses"], fp32["losses"], rtol=0.05)
    train(_cfg(tmp_path / "b", image_folder, steps=3), progress=False)
    resumed = train(_cfg(tmp_path / "b", image_folder), resume=True, progress=False)
    np.testing.assert_allclose(resumed["losses"], full["losses"], rtol=1e-6)
