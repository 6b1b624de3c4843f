"""Product quantisation of the memory bank: shapes, determinism, decode = gather, accuracy, clear errors, no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgediff.errors import EdgediffError
from edgediff.lut import decode, lut_bytes, mean_cosine, train_pq


def _bank(n: int = 600, dim: int = 16, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Clustered snippets on a sphere, like a PCA-reduced encoder bank (not i.i.d. noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.15 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(dim)).astype(np.float32)


def test_codes_and_codebooks_have_the_bundle_layout():
    bank = _bank()
    pq = train_pq(bank, 4, seed=0)
    codes = pq.encode(bank)
    assert codes.dtype == np.uint8 and codes.shape == (600, 4)
    assert pq.codebooks.dtype == np.float32 and pq.codebooks.shape == (4, 256, 4)
    assert decode(codes, pq.codebooks).shape == (600, 16)


def test_decode_is_a_gather_of_one_centroid_per_subspace():
    bank = _bank()
    pq = train_pq(bank, 4, seed=0)
    codes = pq.encode(bank[:5])
    out = decode(codes, pq.codebooks)
    for i in range(5):
        want = np.concatenate([pq.codebooks[m, codes[i, m]] for m in range(4)])
        np.testing.assert_array_equal(out[i], want)


def test_same_seed_same_bytes_and_other_seed_differs():
    bank = _bank()
    a, b, c = train_pq(bank, 4, seed=3), train_pq(bank, 4, seed=3), train_pq(bank, 4, seed=4)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.encode(bank), b.encode(bank))
    assert not np.array_equal(a.codebooks, c.codebooks)


def test_more_bytes_per_entry_reconstruct_better_and_beat_a_random_codebook():
    bank = _bank(n=800, dim=16, clusters=40)
    cos = {m: mean_cosine(bank, train_pq(bank, m, seed=0).decode(train_pq(bank, m, seed=0).encode(bank)))
           for m in (1, 4, 16)}
    assert cos[1] < cos[4] < cos[16]
    assert cos[4] > 0.97
    rng = np.random.default_rng(1)
    random_books = rng.standard_normal((4, 256, 4)).astype(np.float32)
    pq = train_pq(bank, 4, seed=0)
    codes = pq.encode(bank)
    # nearest-centroid codes are optimal for the trained codebook: lower squared error than any other code choice
    err_trained = np.square(bank - pq.decode(codes)).sum()
    err_shifted = np.square(bank - decode((codes.astype(int) + 1) % 256, pq.codebooks)).sum()
    assert err_trained < err_shifted
    assert mean_cosine(bank, decode(codes, random_books)) < cos[4]


def test_small_bank_gets_one_centroid_per_entry_and_round_trips_exactly():
    bank = _bank(n=10, dim=8)
    pq = train_pq(bank, 2, seed=0)
    assert pq.centroids == 10
    np.testing.assert_allclose(pq.decode(pq.encode(bank)), bank, atol=1e-6)


def test_subvectors_must_divide_the_dimension():
    with pytest.raises(EdgediffError, match="--lut-bytes 5 must divide the snippet dimension 16"):
        train_pq(_bank(), 5)


def test_bad_bank_is_a_clear_error():
    bad = _bank()
    bad[3, 2] = np.nan
    with pytest.raises(EdgediffError, match="NaN"):
        train_pq(bad, 4)
    with pytest.raises(EdgediffError, match="shape"):
        train_pq(np.zeros((5,), np.float32), 1)


def test_bytes_at_imagenet_scale():
    # 1.28M entries at 8 B + codebooks (8 × 256 × 8 floats) vs GMem's 3.9 GB float bank
    assert lut_bytes(1_281_167, 64, 8) == 1_281_167 * 8 + 8 * 256 * 8 * 4
    assert lut_bytes(1_281_167, 64, 8) < 11e6


def test_lut_module_never_imports_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, edgediff.lut as l\n"
            "x = np.random.default_rng(0).standard_normal((300, 8)).astype('f4')\n"
            "pq = l.train_pq(x, 2, iters=3); print(pq.decode(pq.encode(x)).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(300, 8)"
