"""Choosing the memory snippet that conditions a sample: numpy only, so the device runtime shares it.

A bank is an array [N, S] of reduced encoder features, one row per training image. A sample is conditioned on
a uniformly random row (the default, as in GMem), a given row, a spherical interpolation of two rows (new images
between two training images), or the projection of a user's own image features.

Why the rows live on a sphere of radius sqrt(S): after PCA the reduced vectors are re-normalised to that radius
(`project`), which gives every component roughly unit scale for the network's linear input layer and makes slerp
the natural interpolation (it stays on the sphere, where all training snippets are). The zero vector, far from
that sphere, is the null condition.
"""

from __future__ import annotations

import numpy as np

from edgediff.errors import EdgediffError


def _check_bank(bank: np.ndarray) -> np.ndarray:
    bank = np.asarray(bank)
    if bank.ndim != 2 or len(bank) == 0:
        raise EdgediffError(f"the memory bank must be a non-empty [N, S] array, got shape {bank.shape}")
    return bank.astype(np.float32, copy=False)


def _check_index(i: int, n: int, flag: str) -> int:
    if not -n <= int(i) < n:
        raise EdgediffError(f"{flag} {i} is out of range: the memory bank has {n} entries (0..{n - 1})")
    return int(i) % n


def random_entries(bank: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` rows drawn uniformly at random (with replacement) with their own seed stream: [n, S]."""
    bank = _check_bank(bank)
    idx = np.random.default_rng([seed, 0x5EED]).integers(0, len(bank), n)
    return bank[idx]


def entry(bank: np.ndarray, index: int, n: int) -> np.ndarray:
    """Row `index` repeated `n` times (--snippet I)."""
    bank = _check_bank(bank)
    i = _check_index(index, len(bank), "--snippet")
    return np.repeat(bank[i : i + 1], n, axis=0)


def slerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical interpolation between vectors a and b (alpha 0 → a, 1 → b); the norm is interpolated linearly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return ((1 - alpha) * a + alpha * b).astype(np.float32)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(np.dot(ua, ub), -1.0, 1.0))
    if omega < 1e-6:
        u = (1 - alpha) * ua + alpha * ub
    else:
        u = (np.sin((1 - alpha) * omega) * ua + np.sin(alpha * omega) * ub) / np.sin(omega)
    return (u * ((1 - alpha) * na + alpha * nb)).astype(np.float32)


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise EdgediffError(f"--interpolate alpha {alpha} must be in [0, 1] (0 gives entry I, 1 gives entry J)")
    return alpha


def interpolate(bank: np.ndarray, i: int, j: int, alpha: float, n: int) -> np.ndarray:
    """slerp of rows i and j at `alpha`, repeated `n` times (--interpolate I,J,ALPHA)."""
    bank = _check_bank(bank)
    _check_alpha(alpha)
    a = bank[_check_index(i, len(bank), "--interpolate")]
    b = bank[_check_index(j, len(bank), "--interpolate")]
    return np.repeat(slerp(a, b, alpha)[None], n, axis=0)


def parse_interpolate(text: str) -> tuple[int, int, float]:
    """'I,J,ALPHA' → (I, J, ALPHA) with a clear error for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        raise EdgediffError(f"--interpolate {text!r} must be I,J,ALPHA, e.g. 3,17,0.5") from None


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Raw encoder features [N, F] → snippets [N, S]: L2-normalise, centre, project on the PCA axes, and put
    the result on the sphere of radius sqrt(S). Training, --like and the device all use this one function."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    z = (f - np.asarray(mean, dtype=np.float64)) @ np.asarray(components, dtype=np.float64).T
    s = components.shape[0]
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12) * np.sqrt(s)
    return z.astype(np.float32)


def check_choice(entries: int, snippet: int | None = None,
                 interpolate_spec: str | tuple[int, int, float] | None = None) -> None:
    """Refuse what `choose` would refuse, knowing only the bank's size: the device checks a request this way before
    it reads the bank or prints anything."""
    if snippet is not None and interpolate_spec is not None:
        raise EdgediffError("use either --snippet or --interpolate, not both")
    if snippet is not None:
        _check_index(snippet, entries, "--snippet")
    if interpolate_spec is not None:
        i, j, alpha = parse_interpolate(interpolate_spec) if isinstance(interpolate_spec, str) else interpolate_spec
        _check_alpha(alpha)
        _check_index(i, entries, "--interpolate")
        _check_index(j, entries, "--interpolate")


def choose(
    bank: np.ndarray,
    n: int,
    seed: int = 0,
    snippet: int | None = None,
    interpolate_spec: str | tuple[int, int, float] | None = None,
) -> np.ndarray:
    """The [n, S] snippets for one sampling call: a given entry, an interpolation, or random entries."""
    if snippet is not None and interpolate_spec is not None:
        raise EdgediffError("use either --snippet or --interpolate, not both")
    if snippet is not None:
        return entry(bank, snippet, n)
    if interpolate_spec is not None:
        spec = parse_interpolate(interpolate_spec) if isinstance(interpolate_spec, str) else interpolate_spec
        return interpolate(bank, spec[0], spec[1], spec[2], n)
    return random_entries(bank, n, seed)
