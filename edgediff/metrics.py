"""Quality metrics: FD and KID in EfficientNet-Lite0 feature space and in an independent network's (FD-Lite0,
FD-independent), and the seam ratio at cell borders.

FD-Lite0 is the Fréchet distance between Gaussians fitted to pooled Lite0 features (FID's formula in a different,
smaller network's space: numbers are NOT comparable with published FIDs, hence the distinct name). KID is the
unbiased MMD² with the cubic polynomial kernel, averaged over random subsets: it has no small-sample bias in
expectation, so it is the one to trust when n is a few hundred. The seam ratio asks whether patch-by-patch
generation leaves visible borders: at each cell-border line, the mean |pixel step| across it over the steps on the
lines beside it (1.0 = invisible), with mid-cell lines and real images as controls.

`evaluate` takes generated uint8 images from anywhere (torch sampler, device runtime, a folder), so every
producer is measured the same way. Metrics only: the `eval` command (sources, sampling, files) is edgediff.evaluate.
"""

from __future__ import annotations

import math

import numpy as np

from edgediff.errors import EdgediffError


def _stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise EdgediffError(f"FD-Lite0 needs at least 2 feature rows [N, F], got shape {f.shape}; use a larger --n")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), with the usual diagonal offset when the product is singular."""
    from scipy import linalg

    diff = mu1 - mu2
    import warnings

    with warnings.catch_warnings():  # few samples in 1280-d give singular covariances: expected, handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov1.shape[0]) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean), 0.0))


def fd_lite0(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FD between two feature sets [N, F] (lower is closer; 0 for identical statistics): FD-Lite0 on Lite0 features,
    FD-independent on the independent network's."""
    return frechet_distance(*_stats(feats_a), *_stats(feats_b))


def kid(
    feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
    return_std: bool = False,
) -> float | tuple[float, float]:
    """Kernel Inception Distance in Lite0 space: unbiased MMD² with k(x, y) = (x·y / d + 1)³ over random subsets."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    m = int(min(subset_size, len(a), len(b)))
    if m < 2:
        raise EdgediffError(f"KID needs at least 2 images on each side, got {len(a)} and {len(b)}; use a larger --n")
    d = a.shape[1]
    # Kernel matrices once (a few GFLOP), then every subset is a cheap gather: 100 subsets of 1000 would
    # otherwise redo ~0.8 TFLOP of matmuls.
    kaa = (a @ a.T / d + 1) ** 3
    kbb = (b @ b.T / d + 1) ** 3
    kab = (a @ b.T / d + 1) ** 3
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for k in range(subsets):
        i = rng.choice(len(a), m, replace=False)
        j = rng.choice(len(b), m, replace=False)
        kxx, kyy, kxy = kaa[np.ix_(i, i)], kbb[np.ix_(j, j)], kab[np.ix_(i, j)]
        vals[k] = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    return (float(vals.mean()), float(vals.std())) if return_std else float(vals.mean())


def _line_steps(x: np.ndarray) -> np.ndarray:
    """Mean |pixel step| between line k−1 and line k, for k = 1..H−1, over rows and columns together: [H−1]."""
    rows = np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3))  # steps between image rows
    cols = np.abs(np.diff(x, axis=2)).mean(axis=(0, 1, 3))  # steps between image columns
    return (rows + cols) / 2


def line_ratio(images: np.ndarray, lines: list[int]) -> float:
    """At each line k (a step between pixel lines k−1 and k): its mean |step| over the mean of the two steps beside
    it (k−2|k−1 and k|k+1), averaged over `lines`. 1.0 = that line is no different from its neighbourhood."""
    x = np.asarray(images, dtype=np.float32)
    steps = _line_steps(x)  # steps[k - 1] is the step k−1|k
    ratios = []
    for k in lines:
        if 2 <= k <= x.shape[1] - 2:
            beside = (steps[k - 2] + steps[k]) / 2
            ratios.append(steps[k - 1] / beside if beside > 0 else (1.0 if steps[k - 1] == 0 else math.inf))
    return float(np.mean(ratios)) if ratios else math.nan


def seam_ratios(images: np.ndarray, cell: int) -> dict[str, float]:
    """The local seam ratio at the cell-border lines of `cell`-px cells, and the same at mid-cell lines (the control).

    `images` is [N, H, W, C] (uint8 or float). Content controls itself: a border is compared with the lines right
    beside it, so a symmetric emoji (whose centre line is special) does not read as seamed the way a ratio against
    all steps did. Seamless generation reads ≈ the real images' value at the same lines.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise EdgediffError(f"seam ratio needs square images [N, H, W, C], got shape {x.shape}")
    h = x.shape[1]
    if cell < 2 or h % cell:
        raise EdgediffError(f"seam lines every {cell} px do not divide the image size {h}")
    border = list(range(cell, h, cell))
    midcell = list(range(cell // 2, h, cell))
    return {"border": line_ratio(x, border), "midcell": line_ratio(x, midcell)}


def seam_cell(image_size: int, grid: int) -> int:
    """Where seams are looked for: the model's cell borders; a full-image model (grid 1) is read at the lines a 2×2
    grid would have, so it has a comparable number."""
    return image_size // max(grid, 2)


def evaluate(
    images_u8: np.ndarray, dataset, grid: int, real_features: np.ndarray | None = None, kid_subsets: int = 100,
    seed: int = 0, real_features_independent: np.ndarray | None = None,
) -> dict:
    """FD and KID in Lite0 space and in the independent network's, and seam ratios, of generated uint8 images
    [N, H, W, 3] against a dataset's real images.

    Real features come from the per-dataset caches (or the arguments); the seam ratios of the real images at the
    same lines are reported alongside, as the values a perfect generator would get. Every quality claim carries
    both FD metrics because the bank and its guidance live in Lite0 space (see edgediff/encoders_independent.py).
    """
    from edgediff.encoders_independent import NAME as independent_name
    from edgediff.encoders import dataset_features, encode

    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.ndim != 4:
        raise EdgediffError(f"evaluate takes uint8 images [N, H, W, 3], got {images_u8.dtype} {images_u8.shape}")
    if images_u8.shape[1:3] != dataset.images.shape[1:3]:
        raise EdgediffError(
            f"generated images are {images_u8.shape[1]} px but the dataset is {dataset.images.shape[1]} px; "
            "pass --data at the run's --image-size"
        )
    real = dataset_features(dataset) if real_features is None else real_features
    real_ind = (dataset_features(dataset, encoder="independent", progress=False)
                if real_features_independent is None else real_features_independent)
    fake = encode(images_u8)
    fake_ind = encode(images_u8, encoder="independent")
    k_mean, k_std = kid(fake, real, subsets=kid_subsets, seed=seed, return_std=True)
    ki_mean, ki_std = kid(fake_ind, real_ind, subsets=kid_subsets, seed=seed, return_std=True)
    cell = seam_cell(images_u8.shape[1], grid)
    seams, seams_real = seam_ratios(images_u8, cell), seam_ratios(dataset.images, cell)
    return {
        "fd_lite0": fd_lite0(fake, real),
        "kid": k_mean,
        "kid_std": k_std,
        "metric_independent": independent_name,
        "fd_independent": fd_lite0(fake_ind, real_ind),  # the same Fréchet formula, other features
        "kid_independent": ki_mean,
        "kid_independent_std": ki_std,
        "seam_border": seams["border"],
        "seam_midcell": seams["midcell"],
        "seam_border_real": seams_real["border"],
        "seam_midcell_real": seams_real["midcell"],
        "n_generated": int(len(images_u8)),
        "n_real": int(len(real)),
        "grid": int(grid),
    }


QUALITY_KEYS = ("fd_lite0", "kid", "kid_std", "fd_independent", "kid_independent", "kid_independent_std")


def quality_fields(scores: dict, digits: int = 6) -> dict:
    """The quality part of an `evaluate` result, rounded, for benchmark rows: one place that decides that every
    quality claim carries both metrics (Lite0 and independent) and names the independent network."""
    out = {k: round(float(scores[k]), digits) for k in QUALITY_KEYS}
    out["metric_independent"] = scores["metric_independent"]
    return out
