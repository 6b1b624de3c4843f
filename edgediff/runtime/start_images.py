"""The images a run redraws instead of drawing from noise (`sample --init`, a cascade's base images): checked once,
then handed to the DDIM loop pass by pass. Numpy only; the sampler resizes and converts each pass's share."""

from __future__ import annotations

import numpy as np

from edgediff.errors import EdgediffError


def check_start_images(init: np.ndarray | None, n: int, strength: float) -> np.ndarray | None:
    """The start images as given, or a one-line refusal: a strength below 1 needs them, and there must be one
    picture (used for every image) or one per requested image."""
    if init is None:
        if strength < 1.0:
            raise EdgediffError(f"--strength {strength:g} redraws start images: pass --init PICTURE (or a bundle "
                                "whose manifest names a base model)")
        return None
    if init.dtype != np.uint8 or init.ndim != 4 or init.shape[3] != 3 or len(init) not in (1, n):
        raise EdgediffError(f"start images must be uint8 [1 or {n}, H, W, 3], got {init.dtype} {init.shape}")
    return init


def pass_slice(init: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The start images of images start..stop-1: one picture given for all, or each image's own."""
    return np.repeat(init, stop - start, axis=0) if len(init) == 1 else init[start:stop]
