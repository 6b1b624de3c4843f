"""The memory-bank conditions of a sampling run, on the device: which snippets the images get, decoded from the
bundle's product-quantised lookup table (edgediff.lut) and chosen by edgediff.snippets, or the null snippet for a
bundle without a bank.

Why its own module: the sampler orders the work (refuse before reading, decode before the model loads); this is the
one place that reads the lookup table's files, and it treats them as hostile data (plain arrays only, shapes held to
the manifest's layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgediff import snippets as snip
from edgediff.bundle import Manifest, resolve
from edgediff.errors import EdgediffError
from edgediff.lut import decode


def check_conditions(manifest: Manifest, snippet: int | None, interpolate: str | None) -> None:
    """Refuse --snippet / --interpolate that cannot work, from the manifest alone: before anything is read or
    printed (a bad index once surfaced only after "sampling N image(s)..." had been announced)."""
    if manifest.lut is None:
        if snippet is not None or interpolate is not None:
            raise EdgediffError("this bundle has no memory bank (exported from a --no-memory run): drop --snippet / "
                                "--interpolate")
        return
    snip.check_choice(manifest.lut.entries, snippet, interpolate)


def choose_snippets(bundle: Path, manifest: Manifest, n: int, seed: int, snippet: int | None,
                    interpolate: str | None) -> np.ndarray:
    """[n, snippet_dim] conditions: decoded from the LUT (a gather) and chosen by edgediff.snippets; a bundle
    without a memory bank samples with the null (zero) snippet."""
    check_conditions(manifest, snippet, interpolate)
    if manifest.lut is None:
        return np.zeros((n, manifest.snippet_dim), dtype=np.float32)
    try:  # checksummed, but the manifest could have been re-hashed over a hostile file: never unpickle, never crash
        codes = np.load(resolve(bundle, manifest.files["lut_codes"]), allow_pickle=False)
        books = np.load(resolve(bundle, manifest.files["lut_codebooks"]), allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as e:  # MemoryError: a header claiming a huge shape
        raise EdgediffError(f"the bundle's lookup table is not a plain numpy array ({str(e).splitlines()[0][:80]}); "
                            "re-export the bundle") from None
    lut = manifest.lut
    if codes.dtype != np.uint8 or books.dtype != np.float32 or codes.ndim != 2 or books.ndim != 3 or \
            codes.shape != (lut.entries, lut.subvectors) or books.shape[0] != lut.subvectors or \
            books.shape[0] * books.shape[2] != lut.dim or int(codes.max(initial=0)) >= books.shape[1] or \
            not np.isfinite(books).all():
        raise EdgediffError("the bundle's lookup table does not match its manifest layout; re-export the bundle")
    bank = decode(codes, books)
    if bank.shape[1] != manifest.snippet_dim:
        raise EdgediffError(f"the lookup table decodes to {bank.shape[1]}-d snippets, the model wants "
                            f"{manifest.snippet_dim}; re-export the bundle")
    chosen = snip.choose(bank, n, seed=seed, snippet=snippet, interpolate_spec=interpolate)
    return np.ascontiguousarray(chosen, dtype=np.float32)
