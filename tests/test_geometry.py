"""Grid geometry and schedule: numpy definitions, and their torch twins held equal."""

import numpy as np
import pytest
import torch

from edgediff import patches, schedule
from edgediff.models import layers


@pytest.mark.parametrize("grid", [1, 2, 4])
def test_split_then_stitch_gives_the_image_back(grid):
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    cells = patches.split(x, grid)
    assert cells.shape == (3, grid * grid, 3, 16 // grid, 16 // grid)
    np.testing.assert_array_equal(patches.stitch(cells, grid), x)


def test_cells_are_row_major():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    cells = patches.split(x, 2)
    # cell 1 = row 0, col 1: the top-right 2×2 block
    np.testing.assert_array_equal(cells[0, 1, 0], [[2, 3], [6, 7]])
    ys, xs = patches.cell_slice(2, 2, 2)
    np.testing.assert_array_equal(x[0, 0, ys, xs], cells[0, 2, 0])


def test_onehot_and_pooling_values():
    oh = patches.onehot([0, 3, 5], grid=3)
    assert oh.shape == (3, 9) and oh.sum() == 3 and oh[1, 3] == 1 and oh[2, 5] == 1
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(patches.pool_global(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(patches.pool_global(x, 1), x)


def test_grid_must_divide_image():
    with pytest.raises(ValueError, match="does not divide"):
        patches.patch_size(32, 3)


@pytest.mark.parametrize("grid", [1, 2, 4])
def test_numpy_and_torch_geometry_agree(grid):
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(layers.split_torch(t, grid).numpy(), patches.split(x, grid))
    np.testing.assert_array_equal(layers.stitch_torch(torch.from_numpy(patches.split(x, grid)), grid).numpy(), x)
    np.testing.assert_allclose(layers.pool_global_torch(t, grid).numpy(), patches.pool_global(x, grid), atol=1e-6)


def test_numpy_and_torch_schedule_agree():
    acp = schedule.cosine_alphas_cumprod()
    assert acp.shape == (1000,) and np.all(np.diff(acp) < 0) and 0 < acp[-1] < 1e-3 < acp[0] <= 1
    np.testing.assert_allclose(layers.alphas_cumprod_torch().numpy(), acp.astype(np.float32))


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
