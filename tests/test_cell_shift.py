"""Shifted cells (edgediff.cell_shift): the grid moves by a seeded offset each step and the image comes back in its
own frame; the seed fixes the offsets whatever the passes; a bundle records the shift and the runtime uses it;
out-of-range shifts are one-line refusals. Also the smoothing of upscaled start images (edgediff.images.resize)."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.bundle import BundleError, read_manifest
from edgediff.cell_shift import cell_offsets, check_cell_shift, roll_into
from edgediff.cells import CellGeometry
from edgediff.images import resize
from edgediff.runtime.sampler import BundleSampler, SampleRequest
from edgediff.sampling import sample_loop
from reliability_support import make_bundle, one_line, run_cli, with_sampling

GEOM = CellGeometry(image_size=16, channels=3, grid=2, halo=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("shift") / "b", seed=4)


def test_roll_into_is_numpys_roll_without_a_new_array():
    src = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    dst = np.empty_like(src)
    for dy, dx in [(0, 0), (3, -2), (-4, 4), (7, 1), (-9, 12)]:
        assert roll_into(dst, src, dy, dx) is dst
        np.testing.assert_array_equal(dst, np.roll(src, (dy, dx), axis=(2, 3)))


def test_offsets_are_seeded_within_half_a_cell_and_cover_every_phase():
    a = cell_offsets(400, 4, seed=3)
    assert a.shape == (400, 2) and a.min() == -4 and a.max() == 3  # [-4, 4): each of 8 phases of an 8 px cell
    np.testing.assert_array_equal(a, cell_offsets(400, 4, seed=3))
    assert not np.array_equal(a, cell_offsets(400, 4, seed=4))
    assert not cell_offsets(5, 0, seed=3).any()
    for bad in (5, -1, 2.0, True):
        with pytest.raises(ValueError, match="half of a 8 px cell"):
            check_cell_shift(bad, 8)


def _loop(eps_fn, shift, n=2, seed=0, steps=6):
    return sample_loop(eps_fn, geom=GEOM, n=n, steps=steps, seed=seed, snippets=np.zeros((n, 4), np.float32),
                       cells_per_call=3, cell_shift=shift)


def test_a_pixelwise_denoiser_gives_the_same_image_on_a_moving_grid():
    """A denoiser that looks at each pixel alone cannot tell where the grid is, so rolling the image, denoising
    and rolling back must give exactly the fixed grid's result: the bookkeeping of the frames is right."""
    h, p = GEOM.halo, GEOM.patch

    def pixelwise(patch, glob, t, pos, snippet):
        return np.tanh(patch[:, :3, h:h + p, h:h + p]) * 0.5

    np.testing.assert_allclose(_loop(pixelwise, 4), _loop(pixelwise, 0), atol=1e-6)


def test_a_denoiser_that_sees_the_grid_gives_other_images_on_a_moving_grid():
    def by_position(patch, glob, t, pos, snippet):
        return np.broadcast_to((pos @ np.arange(4.0, dtype=np.float32))[:, None, None, None] * 0.1,
                               (len(patch), 3, GEOM.patch, GEOM.patch)).copy()

    fixed, moving = _loop(by_position, 0), _loop(by_position, 4)
    assert np.abs(fixed - moving).max() > 0.1
    np.testing.assert_array_equal(moving, _loop(by_position, 4))


def test_the_runtime_uses_the_recorded_shift_and_passes_do_not_change_the_images(bundle, tmp_path):
    def draw(path, **kw):
        return BundleSampler(path, SampleRequest(n=3, steps=4, seed=1, **kw)).run().images

    with_sampling(bundle, tmp_path / "s", {"cell_shift": 4})
    assert read_manifest(tmp_path / "s").sampling["cell_shift"] == 4
    recorded = draw(tmp_path / "s")
    np.testing.assert_array_equal(recorded, draw(bundle, cell_shift=4))
    np.testing.assert_array_equal(recorded, draw(tmp_path / "s", images_per_pass=1))
    assert not np.array_equal(recorded, draw(tmp_path / "s", cell_shift=0))


@pytest.mark.parametrize("value", [5, -1, 2.5, "4"])
def test_a_bad_recorded_shift_is_refused(bundle, tmp_path, value):
    with pytest.raises(BundleError, match="cell_shift must be a whole number from 0 to 4") as e:
        read_manifest(with_sampling(bundle, tmp_path / "b", {"cell_shift": value}))
    assert one_line(str(e.value))


def test_sample_cell_shift_out_of_range_is_a_one_line_refusal(bundle, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "sample", str(bundle), "--n", "1", "--steps", "2",
                             "--cell-shift", "9", "--out", str(tmp_path / "g.png"))
    assert code != 0 and "--cell-shift 9 must be a whole number of pixels from 0" in err
    assert one_line(err.strip().removeprefix("error: ")) and not (tmp_path / "g.png").exists()


def _step_pattern(images: np.ndarray, period: int) -> float:
    """How unevenly the horizontal pixel steps fall over the phases of `period`: (max - min) / mean of the mean step
    at each phase; 0 for an image with no pattern at that period."""
    steps = np.abs(np.diff(images.astype(np.float64), axis=2)).mean(axis=(0, 1, 3))
    by_phase = np.array([steps[p::period].mean() for p in range(period)])
    return float((by_phase.max() - by_phase.min()) / by_phase.mean())


def test_an_upscale_is_smoothed_so_the_source_pixels_pattern_is_damped():
    """Bicubic alone makes every 4th step of a 4× enlargement steeper than its neighbours (what a redraw sharpens
    into blocks); the smoothing takes a good part of that away even from white noise (the worst case: all its
    detail is at the source's pixel scale), and leaves downscales alone."""
    small = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    plain, smoothed = _step_pattern(resize(small, 64, smooth_upscale=False), 4), _step_pattern(resize(small, 64), 4)
    assert plain > 0.5 and smoothed < 0.8 * plain
    big = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize(big, 16), resize(big, 16, smooth_upscale=False))
