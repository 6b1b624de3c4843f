"""The explicit memory bank (GMem): one snippet per training image, built from pretrained encoder features.

Pipeline: Lite0 pooled features (or the user's own .npy) → L2-normalise → PCA (numpy SVD, default 64-d) →
re-normalise to radius sqrt(S) (see snippets.project). The model consumes the reduced vector, so training, export
and the device all live in one S-dimensional space. Horizontal flips get the flipped image's own snippet, so the
flip augmentation does not teach the model that a snippet means "either orientation".

The bank travels with the run: RUN_DIR/memory_bank.safetensors holds the snippets, the flipped snippets and the
PCA (mean, components), so export and eval never need the encoder, and `--like IMAGE` can project a new image
into exactly the training space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.snippets import project

BANK_FILE = "memory_bank.safetensors"
DEFAULT_PCA_DIM = 64


@dataclass
class Snippets:
    """Per-image memory snippets (and those of the flipped images); None fields mean 'no memory bank'."""

    own: np.ndarray | None = None  # [N, S]
    flipped: np.ndarray | None = None  # [N, S]
    dim: int = 64
    info: dict = field(default_factory=dict)


@dataclass
class Bank(Snippets):
    """Snippets plus the PCA that produced them (needed to place new images, e.g. --like, in the same space)."""

    pca_mean: np.ndarray | None = None  # [F]
    pca_components: np.ndarray | None = None  # [S, F]
    extra: dict = field(default_factory=dict)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA of L2-normalised features by SVD: (mean [F], components [S, F], explained variance fraction).

    Signs are fixed (largest-magnitude loading positive) so the same data always gives the same bank.
    """
    x = l2_normalise(features)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    rank = int(np.count_nonzero(s > s[0] * 1e-6)) if len(s) and s[0] > 0 else 0
    dim = int(min(dim, rank))
    if dim < 1:
        raise EdgediffError("the memory-bank features are all identical; the encoder or --features gave no signal")
    comps = vt[:dim]
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2
    explained = float(var[:dim].sum() / max(var.sum(), 1e-30))
    return mean.astype(np.float32), comps.astype(np.float32), explained


def load_user_features(path: str | Path, n_images: int) -> np.ndarray:
    """A user's .npy features, one row per image in the dataset's order; a clear error for any mismatch."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EdgediffError(f"--features {p}: no such file; pass a .npy array with one row per training image")
    try:
        feats = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EdgediffError(f"--features {p} is not a readable .npy array ({e}); save it with numpy.save") from e
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
        raise EdgediffError(f"--features {p} has shape {feats.shape} ({feats.dtype}); it must be numeric [N, F]")
    if len(feats) != n_images:
        raise EdgediffError(
            f"--features {p} has {len(feats)} rows but the dataset has {n_images} images; "
            "compute one row per image, in the dataset's (sorted file name) order"
        )
    if not np.isfinite(feats).all():
        raise EdgediffError(f"--features {p} contains NaN or inf values; recompute the features")
    if (np.linalg.norm(feats, axis=1) == 0).any():
        raise EdgediffError(f"--features {p} has all-zero rows, which cannot be normalised; recompute them")
    return feats.astype(np.float32)


def build_bank(own_feats: np.ndarray, flipped_feats: np.ndarray, dim: int, info: dict) -> Bank:
    """Fit the PCA on the training images' features and project both orientations into it."""
    mean, comps, explained = fit_pca(own_feats, dim)
    own = project(own_feats, mean, comps)
    flipped = project(flipped_feats, mean, comps)
    s = comps.shape[0]
    if s < dim:
        # Fewer images than requested dimensions: pad with zero axes so the model's input width stays `dim`.
        pad = np.zeros((dim - s, comps.shape[1]), dtype=np.float32)
        comps = np.concatenate([comps, pad])
        own = np.pad(own, ((0, 0), (0, dim - s)))
        flipped = np.pad(flipped, ((0, 0), (0, dim - s)))
    info = dict(info, pca_dim=int(dim), pca_rank=int(s), pca_explained=round(explained, 4), n=int(len(own)))
    return Bank(own=own, flipped=flipped, dim=int(dim), info=info, pca_mean=mean, pca_components=comps)


def build_full_bank(own_feats: np.ndarray, flipped_feats: np.ndarray, info: dict) -> Bank:
    """GMem's snippet: the whole L2-normalised encoder feature, no PCA (stored as an identity 'PCA' with zero mean,
    so `project`, --like and export treat both modes alike). On the sphere of radius sqrt(F) like PCA snippets,
    so each component has about unit scale for the model's linear layer."""
    f = own_feats.shape[1]
    mean, comps = np.zeros(f, dtype=np.float32), np.eye(f, dtype=np.float32)
    own, flipped = project(own_feats, mean, comps), project(flipped_feats, mean, comps)
    info = dict(info, pca_dim=int(f), pca_rank=int(f), pca_explained=1.0, n=int(len(own)), snippet_mode="gmem")
    return Bank(own=own, flipped=flipped, dim=int(f), info=info, pca_mean=mean, pca_components=comps)


def _features(dataset, cfg) -> tuple[np.ndarray, np.ndarray, dict]:
    """(own, flipped, provenance): the user's --features (their flip keeps the same row: a user's features have no
    flipped counterpart) or the encoder's, cached per dataset key."""
    if cfg.features:
        own = load_user_features(cfg.features, len(dataset))
        return own, own, {"encoder": "user", "source": str(cfg.features), "flip": "same"}
    from edgediff.encoders import ENCODER_NAME, dataset_features

    return (dataset_features(dataset, flipped=False), dataset_features(dataset, flipped=True),
            {"encoder": ENCODER_NAME, "source": f"cache:{dataset.key}", "flip": "encoded"})


def bank_for_training(dataset, cfg) -> Bank:
    """The memory bank of `dataset` for a TrainConfig: PCA-reduced to snippet_dim, or the full feature with
    --snippet-mode gmem."""
    if cfg.snippet_mode == "gmem":
        return build_full_bank(*_features(dataset, cfg))
    dim = int(cfg.model.get("snippet_dim", DEFAULT_PCA_DIM)) if cfg.model else DEFAULT_PCA_DIM
    if dim < 1:
        raise EdgediffError(f"snippet_dim {dim} must be >= 1 when training with the memory bank (or use --no-memory)")
    own, flipped, info = _features(dataset, cfg)
    return build_bank(own, flipped, dim, info)


def save_run_bank(run_dir: str | Path, bank: Snippets) -> Path | None:
    """Write RUN_DIR/memory_bank.safetensors (atomically); None when the run trains without memory."""
    if bank.own is None:
        return None
    from safetensors.numpy import save

    from edgediff.files import atomic_write_bytes

    tensors = {"snippets": np.ascontiguousarray(bank.own, dtype=np.float32),
               "snippets_flipped": np.ascontiguousarray(bank.flipped, dtype=np.float32)}
    if isinstance(bank, Bank) and bank.pca_mean is not None:
        tensors["pca_mean"] = np.ascontiguousarray(bank.pca_mean, dtype=np.float32)
        tensors["pca_components"] = np.ascontiguousarray(bank.pca_components, dtype=np.float32)
    return atomic_write_bytes(Path(run_dir) / BANK_FILE, save(tensors, metadata={"info": json.dumps(bank.info)}))


def load_run_bank_tensors(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """All tensors of a run's bank file; None when the run was trained without memory."""
    path = Path(run_dir) / BANK_FILE
    if not path.exists():
        run_json = Path(run_dir) / "run.json"
        if run_json.exists() and json.loads(run_json.read_text()).get("train", {}).get("memory", True):
            raise EdgediffError(f"{path} is missing although the run trained with memory; retrain or copy it back")
        return None
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several error types for a damaged file
        raise EdgediffError(f"{path} is not a valid safetensors bank ({e}); retrain the run to rebuild it") from e


def load_run_bank(run_dir: str | Path) -> np.ndarray | None:
    """The run's snippets [N, S] float32 (what export quantises and eval samples from); None without memory."""
    t = load_run_bank_tensors(run_dir)
    return None if t is None else t["snippets"].astype(np.float32, copy=False)


def snippet_like(image_path: str | Path, run_dir: str | Path, image_size: int) -> np.ndarray:
    """--like IMAGE: encode a user's image with Lite0 and project it with the run's PCA → [S]."""
    t = load_run_bank_tensors(run_dir)
    if t is None:
        raise EdgediffError(f"--like needs a run trained with the memory bank; {run_dir} was trained with --no-memory")
    if "pca_mean" not in t:
        raise EdgediffError(f"{run_dir}'s bank has no PCA (user features?); --like works only with encoder banks")
    meta = json.loads((Path(run_dir) / "run.json").read_text()) if (Path(run_dir) / "run.json").exists() else {}
    if meta.get("memory", {}).get("encoder", "efficientnet-lite0") == "user":
        raise EdgediffError("--like cannot place an image in a bank built from --features; use --snippet instead")
    from edgediff.encoders import encode
    from edgediff.images import read_image

    arr = read_image(Path(image_path).expanduser(), image_size, flag="--like")
    s = int(np.count_nonzero(np.abs(t["pca_components"]).sum(axis=1)))  # the non-padded axes
    z = project(encode(arr), t["pca_mean"], t["pca_components"][:s])
    out = np.zeros((t["snippets"].shape[1],), dtype=np.float32)
    out[:s] = z[0]
    return out


def run_snippets(
    run_dir: str | Path,
    n: int,
    seed: int = 0,
    snippet: int | None = None,
    interpolate: str | None = None,
    like: str | Path | None = None,
    image_size: int | None = None,
) -> np.ndarray | None:
    """The [n, S] snippets to sample a run with (None = null condition for a run without memory)."""
    from edgediff.snippets import choose

    chosen = sum(x is not None for x in (snippet, interpolate, like))
    if chosen > 1:
        raise EdgediffError("use only one of --snippet, --interpolate and --like")
    bank = load_run_bank(run_dir)
    if bank is None:
        if chosen:
            raise EdgediffError(f"{run_dir} was trained with --no-memory: --snippet/--interpolate/--like do not apply")
        return None
    if like is not None:
        if image_size is None:
            raise EdgediffError("--like needs the run's image size")
        return np.repeat(snippet_like(like, run_dir, image_size)[None], n, axis=0)
    return choose(bank, n, seed=seed, snippet=snippet, interpolate_spec=interpolate)
