"""Memorisation maths on constructed cases: copies count, noise does not, the optimal denoiser replays."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.memorization import (
    OptimalPatchDenoiser,
    default_sigma,
    distance_ratio,
    energy_and_basin,
    memorization_ratio,
    memorized,
    nearest_neighbours,
    optimal_denoiser,
    pixels_unit,
    sample_optimal,
    scan,
)
from edgediff.schedule import Schedule


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _brute(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    qf = q.reshape(len(q), -1).astype(np.float64)
    rf = r.reshape(len(r), -1).astype(np.float64)
    return np.sqrt(((qf[:, None] - rf[None]) ** 2).sum(-1))


def test_exact_copies_are_memorised_and_fresh_noise_is_not():
    train = _images(40)
    copies = train[[3, 17, 31]]
    noise = _images(20, seed=1)
    assert memorization_ratio(copies, train) == 1.0
    assert memorization_ratio(noise, train) == 0.0
    mixed = np.concatenate([copies, noise[:3]])
    assert memorization_ratio(mixed, train) == pytest.approx(0.5)


def test_slightly_perturbed_copy_still_counts_but_a_blend_does_not():
    train = _images(30).astype(np.int16)
    near = np.clip(train[5] + np.random.default_rng(2).integers(-3, 4, train[5].shape), 0, 255)
    blend = (train[5] + train[6]) // 2
    nb = nearest_neighbours(np.stack([near, blend]), train, 2)
    assert memorized(nb.distances[:, 0], nb.distances[:, 1]).tolist() == [True, False]
    assert nb.indices[0, 0] == 5


def test_copy_of_a_duplicated_training_image_counts_as_memorised():
    train = _images(10)
    train[4] = train[7]
    nb = nearest_neighbours(train[[4]], train, 2)
    assert nb.distances[0, 0] == 0.0 and nb.distances[0, 1] == 0.0
    assert memorized(nb.distances[:, 0], nb.distances[:, 1])[0]
    assert distance_ratio(nb.distances[:, 0], nb.distances[:, 1])[0] == 0.0


@pytest.mark.parametrize("block_bytes", [1 << 12, 1 << 16, 1 << 30])
def test_chunked_nn_equals_brute_force(block_bytes):
    train = _images(300, size=8)
    queries = np.concatenate([_images(25, size=8, seed=3), train[[0, 299, 150]]])
    nb = nearest_neighbours(queries, train, 4, block_bytes=block_bytes)
    d = _brute(queries, train)
    order = np.argsort(d, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(nb.indices, order)
    np.testing.assert_allclose(nb.distances, np.take_along_axis(d, order, axis=1), rtol=1e-12, atol=1e-9)


def test_energy_and_basin_match_direct_formula():
    train = _images(60, size=8)
    queries = np.concatenate([train[[2]], _images(4, size=8, seed=9)])
    sigma = 2.0
    energy, basin = energy_and_basin(queries, train, sigma, transform=pixels_unit, block_bytes=1 << 12)
    d2 = _brute(queries.astype(np.float64) / 127.5, train.astype(np.float64) / 127.5) ** 2
    logits = -d2 / (2 * sigma**2)
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    np.testing.assert_allclose(energy, -(sigma**2) * lse, rtol=1e-9)
    np.testing.assert_allclose(basin, np.exp(logits.max(axis=1) - lse), rtol=1e-9)
    # a stored pattern sits in its own basin; with a tiny σ even fresh points pick exactly one pattern
    assert basin[0] > 0.99 and basin[1:].max() < basin[0]
    _, sharp = energy_and_basin(queries, train, 0.05, transform=pixels_unit)
    assert sharp.min() > 0.99


def test_energy_is_stable_for_far_queries():
    """Plain exp would underflow to log(0) here; the log-sum-exp keeps it finite and ≈ d²/2."""
    train = np.zeros((5, 4), dtype=np.float64)
    train[:, 0] = np.arange(5)
    far = np.full((1, 4), 1000.0)
    energy, basin = energy_and_basin(far, train, 0.1)
    d2_min = ((far - train) ** 2).sum(axis=1).min()
    assert np.isfinite(energy).all()
    assert energy[0] == pytest.approx(d2_min / 2, rel=1e-6)
    assert basin[0] == pytest.approx(1.0)


def test_optimal_denoiser_replays_a_stored_image_at_small_noise():
    rng = np.random.default_rng(0)
    stored = rng.uniform(-1, 1, (64, 3, 8, 8))
    x = stored[11] + 0.02 * rng.standard_normal(stored[11].shape)
    out = optimal_denoiser(x[None], stored, sigma=0.02, block_bytes=1 << 12).reshape(stored[11].shape)
    np.testing.assert_allclose(out, stored[11], atol=1e-6)
    # at large noise it averages: the result is near the mean of the set, not any one image
    blurred = optimal_denoiser(x[None], stored, sigma=100.0).reshape(stored[11].shape)
    assert np.abs(blurred - stored.mean(0)).max() < 0.01


def test_sampler_from_optimal_denoiser_is_fully_memorised_at_grid_1():
    stored = np.random.default_rng(1).uniform(-1, 1, (12, 3, 8, 8)).astype(np.float32)
    imgs = sample_optimal(stored, n=8, grid=1, steps=15, seed=0)
    nb = nearest_neighbours(imgs, stored, 2)
    assert memorized(nb.distances[:, 0], nb.distances[:, 1]).all()
    assert nb.distances[:, 0].max() < 1e-4


def test_patch_posterior_matches_gaussian_likelihood_on_what_the_cell_sees():
    """Brute force: observation o = A x_t (cell pixels + pooled image), likelihood with covariance ∝ A Aᵀ (pinv)."""
    from edgediff.patches import cell_slice, pool_global

    rng = np.random.default_rng(4)
    grid, size, n = 2, 4, 7
    stored = rng.uniform(-1, 1, (n, 1, size, size))
    den = OptimalPatchDenoiser(stored, grid)
    acp = Schedule().alphas_cumprod()
    t, cell = 400, 2
    a = acp[t]
    x_t = np.sqrt(a) * stored[3] + np.sqrt(1 - a) * rng.standard_normal(stored[3].shape)
    ys, xs = cell_slice(cell, grid, size // grid)

    def observe(img):  # [1, H, W] → the vector a cell sees
        return np.concatenate([img[:, ys, xs].ravel(), pool_global(img[None], grid)[0].ravel()])

    basis = np.eye(size * size).reshape(-1, 1, size, size)
    A = np.stack([observe(b) for b in basis], axis=1)
    prec = np.linalg.pinv(A @ A.T * (1 - a), rcond=1e-10)
    o = observe(x_t)
    ll = np.array([-0.5 * (o - np.sqrt(a) * observe(y)) @ prec @ (o - np.sqrt(a) * observe(y)) for y in stored])
    w = np.exp(ll - ll.max())
    w /= w.sum()
    want = (w[:, None] * stored[:, :, ys, xs].reshape(n, -1)).sum(0)
    got = den.cell_x0(x_t[None, :, ys, xs], pool_global(x_t[None], grid), cell, t)
    np.testing.assert_allclose(got.ravel(), want, atol=1e-8)


def test_optimal_patch_denoiser_at_grid_1_is_the_full_image_denoiser():
    rng = np.random.default_rng(5)
    stored = rng.uniform(-1, 1, (9, 3, 8, 8))
    den = OptimalPatchDenoiser(stored, 1)
    t = 300
    a = Schedule().alphas_cumprod()[t]
    x_t = rng.standard_normal((2, 3, 8, 8))
    got = den.cell_x0(x_t, x_t, 0, t)
    want = optimal_denoiser(x_t / np.sqrt(a), stored, sigma=float(np.sqrt((1 - a) / a))).reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=1e-6)  # stored keys are float32


def test_default_sigma_scales_with_the_gap_between_stored_images():
    base = np.zeros((20, 6))
    base[np.arange(20), np.arange(20) % 6] = np.arange(1, 21)  # spread-out points
    s1 = default_sigma(base)
    s2 = default_sigma(base * 10)
    assert s2 == pytest.approx(10 * s1)


def test_scan_exclude_skips_own_row():
    train = _images(12, size=4)
    nb = scan(train, train, k=1, exclude=np.arange(12)).neighbours
    assert (nb.indices[:, 0] != np.arange(12)).all()
    assert (nb.distances[:, 0] > 0).all()
