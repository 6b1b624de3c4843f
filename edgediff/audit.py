"""`edgediff audit`: how much a trained model replays its training set, before anyone ships it to devices.

Samples come from a run's EMA model (torch sampler, the run's bank with GMem-style random entries, or the null
snippet without a bank), from a bundle through the device runtime, or from a folder of already generated images.
Each sample is then measured against the training set (the maths lives in edgediff.memorization):

- memorisation ratio in pixel space (Gu et al.: nearest / second-nearest training image < 1/3) and, when the
  encoder is installed, in FD-Lite0 feature space (the same test on pooled Lite0 features: catches replays that
  are shifted or recoloured a little, which pixel distance misses);
- associative-memory energy E(x) = −σ² log Σ exp(−‖x − ξ‖² / 2σ²) against the training images and the basin
  weight (largest softmax weight: ≈ 1 means the sample fell into one stored image);
- a PNG sheet of the most memorised samples, each beside its nearest and second-nearest training images.

Training mirrors images at random, so by default every training image and its mirror count as ONE stored image
(`--no-flips` turns that off): otherwise a replayed symmetric emoji would look "between two images".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgediff.errors import TRAIN_INSTALL, EdgediffError
from edgediff.evaluate import generate_from_bundle, generate_from_run
from edgediff.sources import RUN, SAMPLES, SOURCES, Source, resolve_data, resolve_source

if TYPE_CHECKING:
    from edgediff.memorization import Scan

AUDIT_JSON = "audit.json"
WORST_PNG = "worst.png"
SAMPLES_PNG = "samples.png"


def audit_source(target: Path | None, samples: Path | None) -> Source:
    """What to audit: a folder of samples (--samples), else a run or a bundle, told apart by the resolver `eval`
    uses too (edgediff.sources.resolve_source); neither given: the default bundle shipped in the package."""
    if samples is not None:
        if not Path(samples).is_dir():
            raise EdgediffError(f"--samples {samples}: no such folder; pass a folder of generated PNG/JPEG images")
        return Source(SAMPLES, Path(samples))
    return resolve_source(target, alternatives=f"{SOURCES}, or --samples FOLDER of generated images")


def default_out(source: Source) -> Path:
    """RUN_DIR/audit for a run; a sibling '<name>_audit' folder otherwise (never inside a checksummed bundle,
    never inside the samples folder, whose next audit would read the sheet as a sample). The shipped bundles
    live inside the installed package: their audits go to the current folder instead."""
    from edgediff.shipped import PACKAGE

    if source.kind == RUN:
        return source.path / "audit"
    if PACKAGE in source.path.resolve().parents:
        return Path(f"{source.path.name}_audit")
    return source.path.parent / f"{source.path.name}_audit"


def check_out(out: Path, overwrite: bool) -> Path:
    """The audit folder, refused before any work when it is a file, or holds an earlier audit and `overwrite` is
    off: an audit is evidence, and a second one must not silently replace the first."""
    if out.exists() and not out.is_dir():
        raise EdgediffError(f"--out {out} is a file; name a folder for the audit")
    earlier = [name for name in (AUDIT_JSON, WORST_PNG, SAMPLES_PNG) if (out / name).exists()]
    if earlier and not overwrite:
        raise EdgediffError(f"{out} holds an earlier audit ({', '.join(earlier)}); pass --out NEW_FOLDER, or "
                            "--overwrite to replace it")
    return out


def _image_size(source: Source) -> int:
    """The size the model generates, or for a folder of samples the smaller side of its first readable image."""
    if source.kind != SAMPLES:
        return source.image_size()
    from PIL import Image, UnidentifiedImageError

    from edgediff.data import IMAGE_SUFFIXES

    for p in sorted(source.path.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            try:
                with Image.open(p) as img:
                    return int(min(img.size))
            except (UnidentifiedImageError, OSError):
                continue
    raise EdgediffError(f"--samples {source.path}: no readable PNG/JPEG/WebP images found")


def generate(source: Source, n: int, steps: int, seed: int, image_size: int, log: Callable[[str], None]) -> np.ndarray:
    """uint8 samples [n, H, W, 3] from a run (torch), a bundle (device runtime) or a folder."""
    if source.kind == SAMPLES:
        from edgediff.data import load_folder

        images = load_folder(source.path, image_size).images
        if n and len(images) > n:
            images = images[:n]
        return images
    log(f"sampling {n} images ({steps} DDIM steps) from the {source.kind} {source.path}")
    if source.kind == RUN:
        images, _ = generate_from_run(source.path, n, steps=steps, seed=seed, progress=True)
        return images
    return generate_from_bundle(source.path, n, steps, seed, log=log).images


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p10": float(np.percentile(x, 10)),
            "p90": float(np.percentile(x, 90)), "min": float(x.min()), "max": float(x.max())}


def _feature_space(samples: np.ndarray, train_ds, flips: bool, log: Callable[[str], None]) -> dict:
    """NN ratio on pooled Lite0 features, or {"skipped": reason} when the encoder is not installed."""
    try:
        from edgediff.encoders import dataset_features, encode
    except ImportError as e:  # the device install has no torch
        reason = f"the encoder is not importable ({e}); install it {TRAIN_INSTALL}"
        log(f"feature space skipped: {reason}")
        return {"skipped": reason}
    from edgediff.memorization import memorized, nearest_groups

    log(f"measuring in FD-Lite0 feature space: encoding {len(samples)} samples and the training images")
    try:
        train_f = dataset_features(train_ds)
        sample_f = encode(samples, progress=len(samples) > 64)
        if flips:
            refs = np.concatenate([train_f, dataset_features(train_ds, flipped=True)])
            groups = np.concatenate([np.arange(len(train_f))] * 2)
        else:
            refs, groups = train_f, np.arange(len(train_f))
    except EdgediffError as e:
        log(f"feature space skipped: {e}")
        return {"skipped": str(e)}
    nb = nearest_groups(sample_f, refs, groups, 2).neighbours
    return {"d1": nb.distances[:, 0], "d2": nb.distances[:, 1], "nearest": nb.indices[:, 0],
            "memorized": memorized(nb.distances[:, 0], nb.distances[:, 1])}


def worst_sheet(samples: np.ndarray, refs: np.ndarray, rows: np.ndarray, order: np.ndarray, path: Path) -> Path:
    """PNG of triplets (most memorised first, two per line beyond 8): sample, nearest, second-nearest training image."""
    from edgediff.images import make_grid, save_png

    tiles = []
    for i in order:
        tiles += [samples[i], refs[rows[i, 0]], refs[rows[i, 1]]]
    scale = max(1, 96 // samples.shape[1])
    return save_png(make_grid(np.stack(tiles), nrow=6 if len(order) > 8 else 3), path, scale=scale)


def _check_options(n: int, steps: int, worst: int, sigma: float | None) -> None:
    """Refuse bad counts and scales before any data is read or sample generated."""
    if n < 1:
        raise EdgediffError(f"--n {n} must be at least 1")
    if steps < 1:
        raise EdgediffError(f"--steps {steps} must be at least 1")
    if worst < 0:
        raise EdgediffError(f"--worst {worst} must be >= 0")
    if sigma is not None and not sigma > 0:
        raise EdgediffError(f"--sigma {sigma} must be > 0 (or leave it out for the automatic scale)")


def _training_set(source: Source, data: str | None, other_data: bool):
    """The training data to compare with (its name, the image size, the loaded set), read before sampling so that
    a bad --data fails before minutes of generation; the nearest/second-nearest test needs two images."""
    from edgediff.data import load_dataset

    if source.kind == SAMPLES and data is None:
        raise EdgediffError("--samples needs --data: the training images to compare the samples with")
    data = data if source.kind == SAMPLES else resolve_data(source, data, other_data)
    size = _image_size(source)
    train_ds = load_dataset(data, size)
    if len(train_ds) < 2:
        raise EdgediffError(f"--data {data} has {len(train_ds)} image; the nearest/second-nearest test needs >= 2")
    return data, size, train_ds


@dataclass
class _PixelMatch:
    """The pixel-space measurement of the samples against the training images (and their mirrors with flips)."""

    refs: np.ndarray  # the stored rows: the training images, then their mirrors with flips
    found: Scan  # the scan of the samples against refs, grouped by training image
    sigma: float
    floor: np.ndarray  # the energy at (up to 256) stored images: the bottom of the landscape
    d1: np.ndarray
    d2: np.ndarray
    memorized: np.ndarray
    ratio: np.ndarray
    nearest: np.ndarray


def _match_pixels(gen: np.ndarray, train: np.ndarray, flips: bool, sigma: float | None, seed: int,
                  log: Callable[[str], None]) -> _PixelMatch:
    """Nearest and second-nearest training image of every sample, its energy and basin weight, and the energy
    floor to read those energies against: near it = sitting in a stored basin, far above it = between patterns."""
    from edgediff.memorization import (
        default_sigma, distance_ratio, memorized, nearest_groups, pixels_unit, scan, with_flips,
    )

    refs, groups = with_flips(train) if flips else (train, np.arange(len(train)))
    sig = float(sigma) if sigma is not None else default_sigma(train, transform=pixels_unit, seed=seed)
    log(f"measuring {len(gen)} samples against {len(train)} training images"
        + (" (and their mirrors)" if flips else "") + f"; energy σ = {sig:.3f}")
    pix = nearest_groups(gen, refs, groups, 2, sigma=sig, transform=pixels_unit)
    d1, d2 = pix.neighbours.distances[:, 0], pix.neighbours.distances[:, 1]
    pick = np.sort(np.random.default_rng(seed).choice(len(train), min(256, len(train)), replace=False))
    floor = scan(train[pick], refs, k=1, sigma=sig, transform=pixels_unit).energy
    return _PixelMatch(refs=refs, found=pix, sigma=sig, floor=floor, d1=d1, d2=d2, memorized=memorized(d1, d2),
                       ratio=distance_ratio(d1, d2), nearest=pix.neighbours.indices[:, 0])


def _pixel_summary(m: _PixelMatch, n_train: int) -> dict:
    """The JSON's "pixel" block: how many samples replay a training image, and which images are replayed most."""
    mem, ratio = m.memorized, m.ratio
    counts = np.bincount(m.nearest[mem], minlength=n_train) if mem.any() else np.zeros(n_train, int)
    return {"memorization_ratio": float(mem.mean()), "memorized": int(mem.sum()),
            "d1_over_d2": _summary(ratio[np.isfinite(ratio)]) if np.isfinite(ratio).any() else None,
            "distinct_nearest": int(len(np.unique(m.nearest))),
            "most_replayed": [{"train_index": int(i), "samples": int(counts[i])}
                              for i in np.argsort(-counts, kind="stable")[:5] if counts[i] > 0]}


def _feature_summary(feat: dict | None) -> dict | None:
    """The JSON's "feature" block (None when feature space was skipped)."""
    from edgediff.memorization import distance_ratio

    if feat is None:
        return None
    return {"space": "FD-Lite0 (pooled EfficientNet-Lite0)", "memorization_ratio": float(feat["memorized"].mean()),
            "memorized": int(feat["memorized"].sum()), "d1_over_d2": _summary(distance_ratio(feat["d1"], feat["d2"]))}


def _landscape_summary(m: _PixelMatch) -> dict:
    """The JSON's "energy" and "basin_weight" blocks: where the samples sit in the stored images' landscape."""
    pix = m.found
    return {"energy": {"sigma": m.sigma, "units": "squared distance in the model's [-1, 1] pixel range",
                       "stats": _summary(pix.energy), "at_training_images": _summary(m.floor)},
            "basin_weight": {"stats": _summary(pix.basin_weight),
                             "fraction_above_0.9": float((pix.basin_weight > 0.9).mean())}}


def _per_sample(m: _PixelMatch, feat: dict | None, n_train: int) -> list[dict]:
    """One JSON row per sample, so that a reader can find any sample's nearest training images by index."""
    pix, rows = m.found, []
    for i in range(len(m.d1)):
        row = {"index": i, "d1": float(m.d1[i]), "d2": float(m.d2[i]), "d1_over_d2": float(m.ratio[i]),
               "memorized": bool(m.memorized[i]), "nearest": int(m.nearest[i]),
               "second": int(pix.neighbours.indices[i, 1]),
               "nearest_is_mirror": bool(pix.neighbours.rows[i, 0] >= n_train),
               "energy": float(pix.energy[i]), "basin_weight": float(pix.basin_weight[i])}
        if feat is not None:
            row.update(feat_d1=float(feat["d1"][i]), feat_d2=float(feat["d2"][i]),
                       feat_memorized=bool(feat["memorized"][i]), feat_nearest=int(feat["nearest"][i]))
        rows.append(row)
    return rows


def audit(
    target: Path | None = None,
    *,
    data: str | None = None,
    n: int = 1000,
    steps: int = 25,
    seed: int = 0,
    samples: Path | None = None,
    out: Path | None = None,
    sigma: float | None = None,
    flips: bool = True,
    worst: int = 16,
    features: bool = True,
    other_data: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Generate (or read) samples, measure them against the training set, write the sheet and the JSON.
    `target` None (and no `samples`): the default bundle. `data` None: the data the run or bundle records (required
    for --samples); an earlier audit in `out` is only replaced with `overwrite`."""
    from edgediff.files import atomic_write_bytes
    from edgediff.images import make_grid, save_png
    from edgediff.memorization import MEMORIZED_RATIO

    _check_options(n, steps, worst, sigma)
    source = audit_source(target, samples)
    data, size, train_ds = _training_set(source, data, other_data)
    out = check_out(Path(out) if out is not None else default_out(source), overwrite)
    gen = generate(source, n, steps, seed, size, log)
    if gen.shape[1:] != train_ds.images.shape[1:]:
        raise EdgediffError(f"samples are {gen.shape[1:3]} but --data gives {train_ds.images.shape[1:3]} images; "
                            "audit against the data the model was trained on")
    train = train_ds.images
    m = _match_pixels(gen, train, flips, sigma, seed, log)
    feat = _feature_space(gen, train_ds, flips, log) if features else {"skipped": "--no-features"}
    skipped = feat.pop("skipped", None)
    feat = None if skipped else feat

    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(m.ratio, kind="stable")[: min(worst, len(gen))]
    sheet = worst_sheet(gen, m.refs, m.found.neighbours.rows, order, out / WORST_PNG) if len(order) else None
    grid_png = save_png(make_grid(gen[:64]), out / SAMPLES_PNG, scale=max(1, 64 // gen.shape[1]))
    summary = {
        "source": {"kind": source.kind, "path": str(source.path)},
        "data": data, "n_samples": int(len(gen)), "n_train": int(len(train)), "image_size": int(size),
        "sampler_steps": int(steps) if source.kind != SAMPLES else None, "seed": int(seed),
        "flips_grouped": bool(flips), "threshold": MEMORIZED_RATIO,
        "pixel": _pixel_summary(m, len(train)),
        "feature_skipped": skipped,
        "feature": _feature_summary(feat),
        **_landscape_summary(m),
        "worst_sheet": str(sheet) if sheet else None, "worst_indices": [int(i) for i in order],
        "samples_png": str(grid_png),
    }
    rows = _per_sample(m, feat, len(train))
    json_path = atomic_write_bytes(out / AUDIT_JSON, json.dumps({**summary, "samples": rows}, indent=1,
                                                                allow_nan=False).encode())
    summary["json"] = str(json_path)
    return summary


def format_summary(s: dict) -> str:
    """The lines `edgediff audit` prints."""
    pix, e, b = s["pixel"], s["energy"]["stats"], s["basin_weight"]
    lines = [
        f"audited {s['n_samples']} samples ({s['source']['kind']} {s['source']['path']}) against {s['n_train']} "
        f"training images of {s['data']}" + (" + mirrors" if s["flips_grouped"] else ""),
        f"memorised (d1/d2 < 1/3), pixel space:   {pix['memorization_ratio']:.1%} ({pix['memorized']}/{s['n_samples']}); "
        f"{pix['distinct_nearest']} distinct nearest training images",
    ]
    if s["feature"] is not None:
        f = s["feature"]
        lines.append(f"memorised (d1/d2 < 1/3), FD-Lite0 space: {f['memorization_ratio']:.1%} ({f['memorized']}/{s['n_samples']})")
    else:
        lines.append(f"FD-Lite0 space: skipped ({s.get('feature_skipped')})")
    if pix["most_replayed"]:
        lines.append("most replayed: " + ", ".join(f"#{r['train_index']} ×{r['samples']}" for r in pix["most_replayed"]))
    lines += [
        f"energy (σ = {s['energy']['sigma']:.3f}): median {e['median']:.2f}, p10 {e['p10']:.2f}, p90 {e['p90']:.2f} "
        f"(at the training images themselves: median {s['energy']['at_training_images']['median']:.2f})",
        f"basin weight: mean {b['stats']['mean']:.3f}, median {b['stats']['median']:.3f}; "
        f"{b['fraction_above_0.9']:.1%} of samples > 0.9 (one training image dominates; a replay only if the "
        "energy is also near the training images' own)",
        f"wrote {s['worst_sheet']} (most memorised: sample | nearest | second nearest), {s['samples_png']}, {s['json']}",
    ]
    return "\n".join(lines)
