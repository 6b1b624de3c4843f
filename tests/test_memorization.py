"""Memorisation maths on constructed cases: copies count, noise does not, the optimal denoiser replays."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.optimal_denoiser import OptimalPatchDenoiser, optimal_denoiser, sample_optimal
from edgediff.memorization import (
    default_sigma,
    distance_ratio,
    energy_and_basin,
    memorization_ratio,
    memorized,
    nearest_neighbours,
    pixels_unit,
    scan,
    nearest_groups,
    with_flips,
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
    from edgediff.cells import cell_slice, pool_global

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


def test_copy_of_a_symmetric_image_counts_when_its_mirror_is_grouped_with_it():
    train = _images(20, size=8)
    train[3] = np.concatenate([train[3][:, :4], train[3][:, :4][:, ::-1]], axis=1)  # left-right symmetric
    train[5, :, :4] = 0  # an asymmetric image, whose mirror is far from it
    refs, groups = with_flips(train)
    near_copy = np.clip(train[3].astype(np.int16) + np.random.default_rng(0).integers(-4, 5, train[3].shape), 0, 255)
    plain = nearest_neighbours(near_copy[None], refs, 2)
    assert not memorized(plain.distances[:, 0], plain.distances[:, 1])[0]  # the mirror looks like a second image
    grouped = nearest_groups(np.stack([near_copy, train[5][:, ::-1]]), refs, groups, 2)
    assert memorized(grouped.neighbours.distances[:, 0], grouped.neighbours.distances[:, 1]).all()
    assert grouped.neighbours.indices[:, 0].tolist() == [3, 5]
    assert (grouped.neighbours.indices[:, 1] != grouped.neighbours.indices[:, 0]).all()


# ---- the audit (edgediff.audit / `edgediff audit`) ----------------------------------------------------------


def _save_folder(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"s_{i:03d}.png")
    return folder


def _audit_fixture(tmp_path):
    """A training folder and a samples folder holding 3 exact copies (one mirrored) and 3 fresh noise images."""
    from conftest import write_images

    from edgediff.data import load_dataset

    train_dir = write_images(tmp_path / "train", n=10, size=16)
    train = load_dataset(str(train_dir), 16).images
    noise = _images(3, size=16, seed=7)
    samples = np.concatenate([train[[1, 4]], train[[6]][:, :, ::-1], noise])
    return train_dir, _save_folder(tmp_path / "gen", samples)


def test_audit_of_a_samples_folder_counts_copies_and_mirrors_but_not_noise(tmp_path):
    import json

    from edgediff.audit import audit

    train_dir, gen = _audit_fixture(tmp_path)
    s = audit(samples=gen, data=str(train_dir), features=False, worst=4)
    assert s["pixel"]["memorization_ratio"] == pytest.approx(0.5)
    body = json.loads((tmp_path / "gen_audit" / "audit.json").read_text())  # beside the folder, not inside it
    rows = body["samples"]
    assert [r["memorized"] for r in rows] == [True, True, True, False, False, False]
    assert rows[2]["nearest_is_mirror"] and not rows[0]["nearest_is_mirror"]
    assert all(r["basin_weight"] > 0.99 for r in rows[:3])
    assert all(r["energy"] < rows[3]["energy"] for r in rows[:3])  # stored patterns sit lowest
    assert (tmp_path / "gen_audit" / "worst.png").stat().st_size > 0
    assert body["worst_indices"][:3] == [0, 1, 2] or sorted(body["worst_indices"][:3]) == [0, 1, 2]
    without = audit(samples=gen, data=str(train_dir), features=False, flips=False, out=tmp_path / "nf")
    assert without["pixel"]["memorized"] == 2  # the mirrored copy is no longer a copy of anything


def test_audit_refuses_bad_input_with_one_line(tmp_path):
    from edgediff.audit import audit
    from edgediff.errors import EdgediffError

    with pytest.raises(EdgediffError, match="--samples"):
        audit(samples=tmp_path / "missing", data="emoji")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgediffError, match="neither a run"):
        audit(tmp_path / "empty", data="emoji")


@pytest.mark.slow
def test_audit_feature_space_uses_the_encoder(tmp_path):
    from edgediff.audit import audit

    train_dir, gen = _audit_fixture(tmp_path)
    s = audit(samples=gen, data=str(train_dir), features=True)
    assert s["feature"] is not None
    assert s["feature"]["memorized"] >= 3  # exact copies have identical features


@pytest.mark.slow
def test_audit_command_on_a_trained_run_and_its_bundle(tmp_path, image_folder):
    import json
    import subprocess
    import sys

    from conftest import tiny_model

    from edgediff.train import TrainConfig, train

    train(TrainConfig(data=str(image_folder), out=str(tmp_path / "run"), image_size=16, grid=2, steps=4,
                      batch_size=8, memory=False, sample_every=0, checkpoint_every=4, model=tiny_model()),
          progress=False)
    proc = subprocess.run([sys.executable, "-m", "edgediff.cli", "audit", str(tmp_path / "run"), "--data",
                           str(image_folder), "--n", "6", "--steps", "3", "--no-features"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "pixel space" in proc.stdout and "basin weight" in proc.stdout
    body = json.loads((tmp_path / "run" / "audit" / "audit.json").read_text())
    assert body["n_samples"] == 6 and len(body["samples"]) == 6
    assert body["source"]["kind"] == "run"
    assert body["feature"] is None and body["feature_skipped"] == "--no-features"

    # the same run exported: the audit samples through the device runtime instead of torch
    from edgediff.audit import audit
    from edgediff_export import ExportOptions, export_run

    export_run(tmp_path / "run", tmp_path / "bundle", ExportOptions(profile=False))
    s = audit(tmp_path / "bundle", data=str(image_folder), n=4, steps=3, features=False)
    assert s["source"]["kind"] == "bundle" and s["n_samples"] == 4
    assert (tmp_path / "bundle_audit" / "audit.json").is_file()  # beside the bundle, never inside it


def test_basin_weight_of_a_group_sums_the_image_and_its_mirror():
    train = _images(6, size=8)
    train[2] = np.concatenate([train[2][:, :4], train[2][:, :4][:, ::-1]], axis=1)  # mirror == itself
    refs, groups = with_flips(train)
    s = nearest_groups(train[[2]], refs, groups, 2, sigma=2.0, transform=pixels_unit)
    assert s.basin_weight[0] > 0.99  # per row it would be ≈ 0.5: the image and its identical mirror
    rows = scan(train[[2]], refs, k=1, sigma=2.0, transform=pixels_unit)
    assert rows.basin_weight[0] == pytest.approx(0.5, abs=0.01)
