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
