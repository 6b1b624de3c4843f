"""The noise schedule: the numpy tables and DDIM rule, and the torch view training reads, held equal."""

import numpy as np

from edgediff import schedule
from edgediff.models.layers import alphas_cumprod_torch


def test_numpy_and_torch_schedule_agree():
    acp = schedule.cosine_alphas_cumprod()
    assert acp.shape == (1000,) and np.all(np.diff(acp) < 0) and 0 < acp[-1] < 1e-3 < acp[0] <= 1
    np.testing.assert_allclose(alphas_cumprod_torch().numpy(), acp.astype(np.float32))


def test_ddim_with_true_noise_recovers_the_image():
    rng = np.random.default_rng(0)
    acp = schedule.cosine_alphas_cumprod()
    x0 = rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([700, 700])
    x_t = schedule.add_noise(x0, eps, t, acp)
    np.testing.assert_allclose(schedule.ddim_step(x_t, eps, 700, -1, acp), x0, atol=1e-4)
    ts = schedule.ddim_timesteps(25)
    assert ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)


def test_resolution_shift_divides_the_snr_and_is_recorded_only_when_on():
    plain, shifted = schedule.Schedule().alphas_cumprod(), schedule.Schedule(shift=4.0).alphas_cumprod()
    np.testing.assert_allclose(shifted / (1 - shifted), plain / (1 - plain) / 16, rtol=1e-9)
    assert np.all(np.diff(shifted) < 0) and np.all(shifted < plain)
    assert "shift" not in schedule.Schedule().to_dict()  # manifests made before the shift stay byte for byte
    assert schedule.Schedule(shift=4.0).to_dict()["shift"] == 4.0
    np.testing.assert_allclose(alphas_cumprod_torch(schedule.Schedule(shift=4.0)).numpy(), shifted.astype(np.float32))


def test_a_shifted_model_is_trained_exported_and_sampled_under_its_own_schedule(tmp_path):
    """The shift is part of the model: from `train --schedule-shift` through the checkpoint to the manifest the
    device runtime samples with, and a manifest whose two records of it disagree is refused."""
    import json

    import pytest

    from conftest import tiny_model, write_images
    from edgediff.bundle.disk import read_manifest
    from edgediff.bundle_info import describe
    from edgediff.bundle.validate import BundleError, parse_manifest
    from edgediff.model_config import ModelConfig, model_choice
    from edgediff.runtime.sampler import sample_bundle
    from edgediff.train import TrainConfig, train
    from edgediff_export import ExportOptions, export_run

    _, widths = model_choice(None, None, None, None, None, schedule_shift=2.0)
    assert widths["schedule_shift"] == 2.0 and "schedule_shift" not in model_choice(None, None, None, None, None)[1]
    assert "--schedule-shift 2" in TrainConfig(model=widths).command()
    cfg = TrainConfig(data=str(write_images(tmp_path / "images", n=8)), out=str(tmp_path / "run"), image_size=16,
                      grid=2, halo=2, steps=4, batch_size=8, memory=False, sample_every=0, checkpoint_every=4,
                      model=tiny_model(schedule_shift=2.0))
    train(cfg, progress=False)
    bundle = tmp_path / "bundle"
    export_run(tmp_path / "run", bundle, ExportOptions(profile=False))
    manifest = read_manifest(bundle)
    assert manifest.schedule.shift == 2.0 and manifest.model_config.schedule == manifest.schedule
    assert "SNR shifted by 2²" in describe(manifest, bundle)  # `edgediff info` says which schedule it samples with
    assert sample_bundle(bundle, n=1, steps=3, seed=0).images.shape == (1, 16, 16, 3)
    raw = json.loads((bundle / "manifest.json").read_text())
    del raw["schedule"]["shift"]
    with pytest.raises(BundleError, match="schedule_shift = 2 but manifest.schedule.shift = 1"):
        parse_manifest(raw)
    for bad in (0.5, 100, True, "2"):
        raw["schedule"]["shift"] = bad
        with pytest.raises(BundleError, match="manifest.schedule.shift must be a number in 1..64"):
            parse_manifest(raw)
    assert "schedule_shift" not in ModelConfig().to_dict()
