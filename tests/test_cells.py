"""Cells: the numpy geometry and input builder (edgediff.cells), and their torch twins held equal."""

import numpy as np
import pytest
import torch

from edgediff import cells as cells_np
from edgediff.cells import CellGeometry, cell_inputs
from edgediff.models import cells as twin
from edgediff.models.cells import cell_inputs_torch


@pytest.mark.parametrize("grid", [1, 2, 4])
def test_split_then_stitch_gives_the_image_back(grid):
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    cells = cells_np.split(x, grid)
    assert cells.shape == (3, grid * grid, 3, 16 // grid, 16 // grid)
    np.testing.assert_array_equal(cells_np.stitch(cells, grid), x)


def test_cells_are_row_major():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    cells = cells_np.split(x, 2)
    # cell 1 = row 0, col 1: the top-right 2×2 block
    np.testing.assert_array_equal(cells[0, 1, 0], [[2, 3], [6, 7]])
    ys, xs = cells_np.cell_slice(2, 2, 2)
    np.testing.assert_array_equal(x[0, 0, ys, xs], cells[0, 2, 0])


def test_onehot_and_pooling_values():
    oh = cells_np.onehot([0, 3, 5], grid=3)
    assert oh.shape == (3, 9) and oh.sum() == 3 and oh[1, 3] == 1 and oh[2, 5] == 1
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(cells_np.pool_global(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(cells_np.pool_global(x, 1), x)


def test_grid_must_divide_image():
    with pytest.raises(ValueError, match="does not divide"):
        cells_np.patch_size(32, 3)


@pytest.mark.parametrize("grid", [1, 2, 4])
def test_numpy_and_torch_geometry_agree(grid):
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(twin.split_torch(t, grid).numpy(), cells_np.split(x, grid))
    np.testing.assert_array_equal(twin.stitch_torch(torch.from_numpy(cells_np.split(x, grid)), grid).numpy(), x)
    np.testing.assert_allclose(twin.pool_global_torch(t, grid).numpy(), cells_np.pool_global(x, grid), atol=1e-6)


@pytest.mark.parametrize("grid,halo", [(1, 0), (1, 2), (2, 0), (2, 3), (4, 0), (4, 4)])
@pytest.mark.parametrize("per_image_t", [False, True])
def test_cell_inputs_and_their_torch_twin_agree(grid, halo, per_image_t):
    """All five inputs, for rows that repeat and skip images: training (torch) and sampling/calibration (numpy) feed
    the network the same tensors."""
    rng = np.random.default_rng(grid * 10 + halo)
    geom = CellGeometry(16, 3, grid, halo)
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    images = np.array([2, 0, 2, 1, 0, 2])
    cells = rng.integers(0, grid * grid, len(images))
    t = rng.integers(0, 1000, 3) if per_image_t else 417
    snippets = rng.standard_normal((3, 5)).astype(np.float32)
    got = cell_inputs(x, images, cells, t, snippets, geom)
    t_torch = torch.from_numpy(t) if per_image_t else t
    ref = cell_inputs_torch(torch.from_numpy(x), torch.from_numpy(images), torch.from_numpy(cells), t_torch,
                            torch.from_numpy(snippets), geom)
    assert got._fields == ref._fields == ("patch", "global_content", "timestep", "position", "snippet")
    for name, a, b in zip(got._fields, got, ref):
        assert a.dtype == b.numpy().dtype, name
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-6 if name == "global_content" else 0, err_msg=name)
    # and what they agree on is right: each row is its own image's cell, pooled image, timestep, position, snippet
    p, m = geom.patch, halo
    np.testing.assert_array_equal(got.patch[:, :3, m : m + p, m : m + p], cells_np.split(x, grid)[images, cells])
    np.testing.assert_array_equal(got.global_content[:, :, m : m + p, m : m + p], cells_np.pool_global(x, grid)[images])
    np.testing.assert_array_equal(got.timestep, t[images] if per_image_t else np.full(len(images), 417))
    np.testing.assert_array_equal(got.position.argmax(1), cells)
    np.testing.assert_array_equal(got.snippet, snippets[images])
    pooled = cells_np.pool_global(x, grid)
    np.testing.assert_array_equal(cell_inputs(x, images, cells, t, snippets, geom, pooled=pooled).global_content,
                                  got.global_content)
