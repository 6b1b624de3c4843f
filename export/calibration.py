"""Real denoiser inputs drawn from a run's training data: the parity check and int8 calibration both use them.

Random tensors exercise a network in regions it never sees (a calibration on them picks the wrong activation
ranges); these are what the sampler actually feeds: a training image noised to x_t, one of its cells, the
whole x_t pooled to the patch size, the one-hot cell, and the image's memory snippet (or the null snippet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgediff.data import load_dataset
from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig
from edgediff.cells import INPUT_NAMES, cell_inputs
from edgediff.schedule import add_noise


@dataclass
class RunData:
    """The run's training images (float NCHW) and its memory bank (None for a --no-memory run)."""

    images: np.ndarray  # [N, C, H, W] float32 in [-1, 1]
    bank: np.ndarray | None  # [N_bank, S] float32


def run_uses_memory(meta: dict) -> bool:
    return bool(meta.get("train", {}).get("memory", True))


def load_run_bank(run_dir: Path, meta: dict) -> np.ndarray | None:
    """The run's PCA-reduced snippet bank [N, S], or None when the run was trained with --no-memory."""
    if not run_uses_memory(meta):
        return None
    try:
        from edgediff.memory_bank import load_run_bank as _load
    except ImportError as e:
        raise EdgediffError(f"{run_dir} was trained with a memory bank but edgediff.memory_bank is unavailable ({e}); "
                            "reinstall edgediff") from e
    bank = _load(Path(run_dir))
    if bank is None:
        return None
    bank = np.asarray(bank, dtype=np.float32)
    if bank.ndim != 2 or len(bank) == 0:
        raise EdgediffError(f"the memory bank of {run_dir} has shape {bank.shape}; retrain or rebuild the bank")
    return bank


def load_run_data(run_dir: Path, meta: dict, config: ModelConfig, max_images: int = 512, seed: int = 0) -> RunData:
    """A seeded subset of the run's training images (as in run.json) plus its bank."""
    train = meta.get("train", {})
    spec = train.get("data", "emoji")
    try:
        ds = load_dataset(spec, config.image_size)
    except EdgediffError as e:
        raise EdgediffError(f"export needs the run's training data for its parity check and calibration: {e}") from e
    bank = load_run_bank(run_dir, meta)
    if bank is not None and bank.shape[1] != config.snippet_dim:
        raise EdgediffError(f"the bank of {run_dir} has {bank.shape[1]}-d snippets, the model takes "
                            f"{config.snippet_dim}; the run is inconsistent, retrain it")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), min(max_images, len(ds)), replace=False))
    images = ds.as_float(idx)
    if bank is not None and len(bank) == len(ds):
        bank_rows = bank[idx]  # the bank is row-aligned with the dataset: pair each image with its own snippet
    else:
        bank_rows = bank
    return RunData(images=images, bank=bank_rows)


def denoiser_inputs(data: RunData, config: ModelConfig, timesteps: list[int] | np.ndarray, *,
                    images_per_t: int, seed: int = 0, null_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """For each t: `images_per_t` images noised to x_t, EVERY grid cell of each → dict of input arrays.

    Rows are ordered (t, image, cell). `null_fraction` of the images get the null (zero) snippet, as in
    training with snippet dropout and in unconditional sampling.
    """
    rng = np.random.default_rng(seed)
    acp = config.schedule.alphas_cumprod()
    geom = config.geometry
    cells = geom.num_cells
    out: dict[str, list[np.ndarray]] = {k: [] for k in INPUT_NAMES}
    for t in np.asarray(timesteps, dtype=np.int64):
        pick = rng.choice(len(data.images), images_per_t, replace=len(data.images) < images_per_t)
        x0 = data.images[pick]
        x_t = add_noise(x0, rng.standard_normal(x0.shape, dtype=np.float32), np.full(len(pick), t), acp)
        rows_img = np.repeat(np.arange(len(pick)), cells)
        rows_cell = np.tile(np.arange(cells), len(pick))
        if data.bank is not None and len(data.bank) == len(data.images):
            sn = data.bank[pick].copy()
        elif data.bank is not None:
            sn = data.bank[rng.integers(0, len(data.bank), len(pick))].copy()
        else:
            sn = np.zeros((len(pick), config.snippet_dim), dtype=np.float32)
        sn[rng.random(len(pick)) < null_fraction] = 0.0
        for name, value in cell_inputs(x_t, rows_img, rows_cell, int(t), sn, geom)._asdict().items():
            out[name].append(value)
    return {k: np.ascontiguousarray(np.concatenate(v)) for k, v in out.items()}


def take(inputs: dict[str, np.ndarray], rows: slice | np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[rows]) for k, v in inputs.items()}
