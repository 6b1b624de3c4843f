"""Product quantisation of the memory bank: the lookup table that ships instead of the float bank. numpy only.

A bank of N snippets of dimension D is cut into M sub-vectors of D/M values; each sub-space gets its own
codebook of (up to) 256 centroids found by k-means, and each entry is stored as M uint8 codes: M bytes per
entry instead of 4·D. Decoding on the device is one gather, `codebooks[m, codes[:, m]]`, so no arithmetic and
no float bank in memory beyond the rows a sampling call actually needs.

Why PQ and not just a smaller PCA: GMem's own compression is a truncated SVD (still float32); PQ on top of the
PCA-reduced snippets brings 64-d float (256 B) to 8 B per entry, the difference between 3.9 GB and ~10 MB at
ImageNet scale. The codebooks themselves are tiny (M × 256 × D/M floats = 256·D·4 bytes, whatever the bank size).

Everything is seeded: the same bank, M and seed give byte-identical codes and codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgediff.errors import EdgediffError

CENTROIDS = 256
TRAIN_POINTS = 65536  # k-means sees at most this many entries; encoding covers the whole bank in chunks
ENCODE_CHUNK = 8192


@dataclass
class ProductQuantizer:
    """The trained codebooks [M, K, D/M]; `encode` maps a bank to uint8 codes [N, M], `decode` gathers back."""

    codebooks: np.ndarray  # float32 [M, K, D/M]

    @property
    def subvectors(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def centroids(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[0] * self.codebooks.shape[2])

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid in each sub-space → uint8 codes [N, M]."""
        x = _as_bank(x, self.dim)
        m, _, sub = self.codebooks.shape
        codes = np.empty((x.shape[0], m), dtype=np.uint8)
        for start in range(0, x.shape[0], ENCODE_CHUNK):
            part = x[start : start + ENCODE_CHUNK].reshape(-1, m, sub)
            for j in range(m):
                codes[start : start + part.shape[0], j] = _nearest(part[:, j], self.codebooks[j])
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return decode(codes, self.codebooks)


def decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """The device-side decode: a gather of one centroid per sub-space, concatenated → float32 [N, D]."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != codebooks.shape[0]:
        raise ValueError(f"codes of shape {codes.shape} do not match {codebooks.shape[0]} codebooks")
    m, _, sub = codebooks.shape
    out = codebooks[np.arange(m)[None, :], codes.astype(np.intp)]  # [N, M, D/M]
    return np.ascontiguousarray(out.reshape(codes.shape[0], m * sub), dtype=np.float32)


def train_pq(bank: np.ndarray, subvectors: int, *, seed: int = 0, iters: int = 25,
             centroids: int = CENTROIDS) -> ProductQuantizer:
    """k-means (k-means++ seeding, Lloyd iterations) independently in each of `subvectors` sub-spaces.

    A bank with fewer than `centroids` entries gets one centroid per entry (exact codes), so tiny test banks
    still round-trip; the codebook then has fewer than 256 rows and the manifest records how many.
    """
    bank = _as_bank(bank)
    n, dim = bank.shape
    if subvectors < 1 or dim % subvectors:
        raise EdgediffError(
            f"--lut-bytes {subvectors} must divide the snippet dimension {dim}; pick a divisor such as "
            f"{', '.join(str(d) for d in range(1, dim + 1) if dim % d == 0 and d <= 64)}"
        )
    if not 1 <= centroids <= 256:
        raise ValueError(f"centroids must be in 1..256 to fit a uint8 code, got {centroids}")
    rng = np.random.default_rng(seed)
    train = bank if n <= TRAIN_POINTS else bank[rng.choice(n, TRAIN_POINTS, replace=False)]
    k = min(centroids, train.shape[0])
    sub = dim // subvectors
    books = np.empty((subvectors, k, sub), dtype=np.float32)
    for j in range(subvectors):
        books[j] = kmeans(train[:, j * sub : (j + 1) * sub], k, rng=rng, iters=iters)
    return ProductQuantizer(books)


def kmeans(x: np.ndarray, k: int, *, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means in float64 with k-means++ seeding; an emptied cluster is re-seeded at the worst-fit point."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if k > n:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    if k == n:
        return x.astype(np.float32)  # one centroid per point: exact
    centres = _kmeans_pp(x, k, rng)
    prev_assign = None
    for _ in range(iters):
        d = _sq_dists(x, centres)
        assign = d.argmin(axis=1)
        if prev_assign is not None and np.array_equal(assign, prev_assign):
            break
        prev_assign = assign
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        nonempty = counts > 0
        centres[nonempty] = sums[nonempty] / counts[nonempty, None]
        if not nonempty.all():
            worst = np.argsort(-d[np.arange(n), assign])[: int((~nonempty).sum())]
            centres[~nonempty] = x[worst]
    return centres.astype(np.float32)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    closest = ((x - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = closest.sum()
        idx = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centres[i] = x[idx]
        closest = np.minimum(closest, ((x - centres[i]) ** 2).sum(axis=1))
    return centres


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    c = c.astype(np.float64)
    # ||x||² is the same for every centroid of a row: argmin needs only ||c||² − 2 x·c
    return ((c * c).sum(1)[None, :] - 2.0 * x @ c.T).argmin(axis=1).astype(np.uint8)


def _as_bank(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or (dim is not None and x.shape[1] != dim):
        want = f"[entries, {dim}]" if dim is not None else "[entries, dim]"
        raise EdgediffError(f"the memory bank has shape {x.shape}, expected {want}; rebuild the run's bank")
    if not np.isfinite(x).all():
        raise EdgediffError("the memory bank holds NaN or inf values; rebuild the run's bank")
    return x


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity between matching rows (how faithful the decoded snippets are)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def lut_bytes(entries: int, dim: int, subvectors: int, centroids: int = CENTROIDS) -> int:
    """Bytes the LUT takes for a bank of `entries`: the codes plus the (bank-size independent) codebooks."""
    return entries * subvectors + subvectors * centroids * (dim // subvectors) * 4
