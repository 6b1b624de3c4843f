"""Memorisation in numpy: the nearest-neighbour ratio and the associative-memory energy that `edgediff audit` reports.

Why these (Gu et al. 2023 and Hoover et al. 2023):
- A generated sample is *memorised* when its nearest training image is much closer than the second nearest
  (d1 / d2 < 1/3): it sits on one training image instead of between several.
- The softmax of the closed-form optimal denoiser, D(x; σ) = Σᵢ softmax_i(−‖x − yᵢ‖² / 2σ²) yᵢ (the model a fully
  memorising network converges to; it lives with the benchmark that samples it, benchmarks/optimal_denoiser.py),
  is one retrieval step of a dense associative memory with energy
  E(x) = −σ² log Σᵢ exp(−‖x − yᵢ‖² / 2σ²); its largest weight (the *basin weight*) says whether a sample fell into
  a single stored pattern (≈ 1) or lies between patterns.

Everything streams over the reference set in chunks (reference rows × query rows bounded by `block_bytes`), so a
50k-image training set is searched without ever forming an N × N (or even M × N) distance matrix, and a uint8
training set is converted to float one chunk at a time. Distances accumulate in float64 so a small σ (sharp
softmax) stays accurate; the k winners are then re-measured exactly, so an exact copy has distance 0.

This module never imports torch: the audit's maths runs anywhere numpy does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


MEMORIZED_RATIO = 1.0 / 3.0
BLOCK_BYTES = 32 << 20  # one float64 distance block / reference chunk stays under this
CANDIDATE_MARGIN = 4  # extra candidates kept per query before the exact re-measure (absorbs rounding near ties)

Transform = Callable[[np.ndarray], np.ndarray]


def flatten(block: np.ndarray) -> np.ndarray:
    """Default transform: any array [n, ...] → float64 rows [n, D] (uint8 images stay in 0..255 units)."""
    block = np.asarray(block)
    return block.reshape(len(block), -1).astype(np.float64, copy=False)


def pixels_unit(block: np.ndarray) -> np.ndarray:
    """uint8 images [n, H, W, C] → float64 rows in the model's [-1, 1] range (where σ of the energy lives)."""
    block = np.asarray(block)
    return block.reshape(len(block), -1).astype(np.float64) / 127.5 - 1.0


def _rows_per_chunk(dim: int, other_rows: int, block_bytes: int) -> int:
    """Reference rows per chunk so that both the chunk [r, D] and the distance block [q, r] fit the budget."""
    by_dim = block_bytes // max(1, 8 * dim)
    by_block = block_bytes // max(1, 8 * other_rows)
    return int(max(1, min(by_dim, by_block)))


def _ref_chunks(refs: np.ndarray, rows: int, transform: Transform) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(refs), rows):
        yield start, transform(refs[start : start + rows])


def stream_sq_dists(
    queries: np.ndarray, refs: np.ndarray, transform: Transform, block_bytes: int, query_rows: int = 512
) -> Iterator[tuple[slice, int, np.ndarray, np.ndarray]]:
    """Yield (query slice, ref start, squared distances [q, r], ref chunk [r, D]) over every pair of blocks.

    Outer loop over reference chunks so each chunk is converted once; ‖q‖² + ‖r‖² − 2 q·r in float64, clamped at 0.
    """
    q = transform(queries)
    q2 = np.einsum("ij,ij->i", q, q)
    qrows = max(1, min(query_rows, len(q)))
    rows = _rows_per_chunk(q.shape[1], qrows, block_bytes)
    for start, r in _ref_chunks(refs, rows, transform):
        if r.shape[1] != q.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} values per row but references have {r.shape[1]}")
        r2 = np.einsum("ij,ij->i", r, r)
        for qs in range(0, len(q), qrows):
            sl = slice(qs, qs + qrows)
            d2 = q2[sl, None] + r2[None, :] - 2.0 * (q[sl] @ r.T)
            np.maximum(d2, 0.0, out=d2)
            yield sl, start, d2, r


@dataclass
class Neighbours:
    """The k nearest references of each query, ascending: exact ℓ2 distances [M, k] and indices [M, k]."""

    distances: np.ndarray
    indices: np.ndarray
    rows: np.ndarray | None = None  # nearest_groups only: the reference row that realised each group distance


@dataclass
class Scan:
    """One pass over the references: nearest neighbours and, when σ was given, energy and basin per query."""

    neighbours: Neighbours
    energy: np.ndarray | None = None  # [M]  −σ² log Σ exp(−d²/2σ²)
    basin_weight: np.ndarray | None = None  # [M] largest softmax weight
    sigma: float | None = None
    log_z: np.ndarray | None = None  # [M] log Σ exp(−d²/2σ²), kept so callers can re-weigh groups of rows


def scan(
    queries: np.ndarray,
    refs: np.ndarray,
    *,
    k: int = 2,
    sigma: float | None = None,
    transform: Transform = flatten,
    block_bytes: int = BLOCK_BYTES,
    exclude: np.ndarray | None = None,
) -> Scan:
    """k nearest references of each query, plus energy/basin weight when `sigma` is set, in one chunked pass.

    `exclude` [M] (optional) gives, per query, one reference index to skip: the query's own row when a set is
    searched against itself. Memory: O(M·(k + D) + block_bytes), whatever len(refs) is.
    """
    n_ref = len(refs)
    n_q = len(queries)
    if n_ref < k:
        raise ValueError(f"need at least k={k} reference rows, got {n_ref}")
    cand = min(n_ref, k + CANDIDATE_MARGIN)
    best_d = np.full((n_q, cand), np.inf)
    best_i = np.full((n_q, cand), -1, dtype=np.int64)
    lse_max = np.full(n_q, -np.inf)
    lse_sum = np.zeros(n_q)
    for sl, start, d2, _ in stream_sq_dists(queries, refs, transform, block_bytes):
        rows = np.arange(sl.start, sl.start + d2.shape[0])
        if exclude is not None:
            local = exclude[rows] - start
            hit = (local >= 0) & (local < d2.shape[1])
            d2[hit, local[hit]] = np.inf
        if sigma is not None:
            logits = -d2 / (2.0 * sigma * sigma)
            m_new = np.maximum(lse_max[rows], logits.max(axis=1))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)  # a block that is all excluded adds nothing
            lse_sum[rows] = lse_sum[rows] * np.exp(lse_max[rows] - m_safe) + np.exp(logits - m_safe[:, None]).sum(axis=1)
            lse_max[rows] = m_new
        take = min(cand, d2.shape[1])
        part = np.argpartition(d2, take - 1, axis=1)[:, :take] if take < d2.shape[1] else np.broadcast_to(
            np.arange(d2.shape[1]), d2.shape)
        all_d = np.concatenate([best_d[rows], np.take_along_axis(d2, part, axis=1)], axis=1)
        all_i = np.concatenate([best_i[rows], part + start], axis=1)
        keep = np.argpartition(all_d, cand - 1, axis=1)[:, :cand]
        best_d[rows] = np.take_along_axis(all_d, keep, axis=1)
        best_i[rows] = np.take_along_axis(all_i, keep, axis=1)
    best_i[~np.isfinite(best_d)] = -1  # excluded rows never come back as neighbours
    neighbours = _exact_topk(queries, refs, best_i, k, transform)
    if sigma is None:
        return Scan(neighbours)
    log_z = lse_max + np.log(lse_sum)
    energy = -(sigma**2) * log_z
    nearest_logit = -(neighbours.distances[:, 0] ** 2) / (2.0 * sigma * sigma)
    basin = np.exp(np.minimum(nearest_logit - log_z, 0.0))
    return Scan(neighbours, energy=energy, basin_weight=basin, sigma=float(sigma), log_z=log_z)


def _exact_topk(queries: np.ndarray, refs: np.ndarray, cand_i: np.ndarray, k: int, transform: Transform) -> Neighbours:
    """Re-measure each query's candidates directly (‖q − r‖, no expansion) and keep the k nearest, ascending."""
    q = transform(queries)
    out_d = np.empty((len(q), k))
    out_i = np.empty((len(q), k), dtype=np.int64)
    for j in range(len(q)):
        idx = cand_i[j][cand_i[j] >= 0]
        if len(idx) < k:
            raise ValueError(f"fewer than k={k} references left after exclusion")
        r = transform(refs[idx])
        d = np.sqrt(((r - q[j]) ** 2).sum(axis=1))
        order = np.lexsort((idx, d))[:k]
        out_d[j], out_i[j] = d[order], idx[order]
    return Neighbours(out_d, out_i)


def nearest_neighbours(
    queries: np.ndarray, refs: np.ndarray, k: int = 2, *, transform: Transform = flatten,
    block_bytes: int = BLOCK_BYTES,
) -> Neighbours:
    """Chunked exact k-NN (ℓ2): the search every memorisation number rests on."""
    return scan(queries, refs, k=k, transform=transform, block_bytes=block_bytes).neighbours


def with_flips(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images and their horizontal mirrors [2N, H, W, C], group id [2N]): the set a model trained with flip
    augmentation actually saw, each mirror grouped with its original so the pair counts as ONE training image."""
    images = np.asarray(images)
    groups = np.arange(len(images), dtype=np.int64)
    return np.concatenate([images, images[:, :, ::-1]]), np.concatenate([groups, groups])


def nearest_groups(
    queries: np.ndarray, refs: np.ndarray, groups: np.ndarray, k: int = 2, *, sigma: float | None = None,
    transform: Transform = flatten, block_bytes: int = BLOCK_BYTES,
) -> Scan:
    """Like `scan`, but neighbours are distinct *groups* (a training image and its augmentations): the distance
    to a group is the distance to its closest member. Without this, a memorised copy of a left-right symmetric
    training image would have d1 ≈ d2 (the image and its mirror) and never count as memorised.
    Returned indices are group ids; the energy (with σ) is over every stored row, the basin weight is the summed
    softmax weight of the nearest group."""
    groups = np.asarray(groups, dtype=np.int64)
    per_group = int(np.bincount(groups).max()) if len(groups) else 1
    if len(np.unique(groups)) < k:
        raise ValueError(f"need at least k={k} distinct groups, got {len(np.unique(groups))}")
    s = scan(queries, refs, k=min(len(refs), k * per_group), sigma=sigma, transform=transform,
             block_bytes=block_bytes)
    out_d = np.empty((len(queries), k))
    out_i = np.empty((len(queries), k), dtype=np.int64)
    out_r = np.empty((len(queries), k), dtype=np.int64)
    for j, (dist, idx) in enumerate(zip(s.neighbours.distances, s.neighbours.indices)):
        g = groups[idx]
        _, first = np.unique(g, return_index=True)  # first (nearest) row of each group, rows are ascending
        first = np.sort(first)[:k]
        out_d[j], out_i[j], out_r[j] = dist[first], g[first], idx[first]
    s.neighbours = Neighbours(out_d, out_i, out_r)
    if sigma is not None:
        # Basin weight of the nearest *group* (an image and its mirror share one basin): the summed softmax
        # weight of its rows, measured exactly for those few rows against the streamed normaliser.
        order = np.argsort(groups, kind="stable")
        starts = np.searchsorted(groups[order], out_i[:, 0])
        q = transform(queries)
        for j in range(len(q)):
            members = order[starts[j] : starts[j] + per_group]
            members = members[groups[members] == out_i[j, 0]]
            d2 = ((transform(refs[members]) - q[j]) ** 2).sum(axis=1)
            logits = -d2 / (2.0 * sigma * sigma)
            m = logits.max()
            s.basin_weight[j] = min(1.0, float(np.exp(m + np.log(np.exp(logits - m).sum()) - s.log_z[j])))
    return s


def memorized(d1: np.ndarray, d2: np.ndarray, threshold: float = MEMORIZED_RATIO) -> np.ndarray:
    """Gu et al.'s test per sample: d1 / d2 < threshold; an exact copy (d1 = 0) counts even if d2 = 0 too."""
    d1, d2 = np.asarray(d1, dtype=np.float64), np.asarray(d2, dtype=np.float64)
    return (d1 < threshold * d2) | (d1 == 0.0)


def distance_ratio(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """d1 / d2, with 0/0 (a copy of a duplicated image) reported as 0."""
    d1, d2 = np.asarray(d1, dtype=np.float64), np.asarray(d2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), np.where(d1 > 0, np.inf, 0.0))
    return r


def memorization_ratio(
    samples: np.ndarray, train: np.ndarray, *, threshold: float = MEMORIZED_RATIO, transform: Transform = flatten,
    block_bytes: int = BLOCK_BYTES,
) -> float:
    """Fraction of `samples` memorised against `train` (both [n, ...], same layout)."""
    nb = nearest_neighbours(samples, train, 2, transform=transform, block_bytes=block_bytes)
    return float(memorized(nb.distances[:, 0], nb.distances[:, 1], threshold).mean())


def default_sigma(refs: np.ndarray, *, transform: Transform = flatten, sample: int = 256, seed: int = 0,
                  block_bytes: int = BLOCK_BYTES) -> float:
    """σ for the energy: a third of the 10th-percentile distance from a stored image to its nearest other one.

    Why this scale: with σ ≤ gap/3 a stored image whose nearest neighbour is `gap` away is a basin of its own
    (an exact copy of it gets weight ≳ 0.98 against one such neighbour), and the 10th percentile makes that hold
    for ~90% of the stored images, so "basin weight ≈ 1" can be read as "fell into one stored image". Much
    larger σ blurs every sample over many patterns; much smaller calls every sample "in a basin".
    """
    n = len(refs)
    if n < 2:
        raise ValueError("need at least 2 stored images to set σ")
    pick = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    nb = scan(refs[pick], refs, k=1, transform=transform, block_bytes=block_bytes, exclude=pick).neighbours
    d = nb.distances[:, 0]
    gap = float(np.percentile(d[d > 0], 10)) if (d > 0).any() else 1.0
    return gap / 3.0


def energy_and_basin(
    queries: np.ndarray, refs: np.ndarray, sigma: float, *, transform: Transform = flatten,
    block_bytes: int = BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """(energy [M], basin weight [M]) of each query against the stored patterns `refs`."""
    s = scan(queries, refs, k=1, sigma=sigma, transform=transform, block_bytes=block_bytes)
    return s.energy, s.basin_weight
