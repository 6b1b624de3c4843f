"""Shifted cells: the grid moves by a small random offset at every DDIM step (SpotDiffusion, Wang et al. 2024).

Why: a cell model's errors sit where its cells end. With a fixed grid every step puts its error at the same lines,
and 25 steps add them up into a visible grid; with a grid that moves, each step's border falls somewhere else and
the errors spread over the image instead. The same holds for any texture that repeats with the network's strides,
which a fixed grid pins to the same pixels at every step.

How, without changing what the network was trained on: the whole noisy image is rolled by (dy, dx) (wrapping
round its edges), the cells of the rolled image are denoised exactly as usual (the global content is the rolled
image pooled, the position is a cell of the grid), and the result is rolled back. An offset is at most half a cell
each way, so a cell's one-hot position still names the grid cell that holds most of what it sees. What wraps is the
image's outer margin, a band at most half a cell wide; the halo does not reach across the rolled image's edge, so
that is the one line a step predicts from one side (emoji margins are blank, so it falls on white).

Memory: the roll goes into the loop's second buffer, so shifting costs no extra memory and one copy per step.
The offsets come from their own stream of the run's seed: the seed still fixes every image, and passes of any size
see the same offsets.
"""

from __future__ import annotations

import numpy as np

SHIFT_STREAM = 0x5F0F  # a second stream of the run's seed, so the offsets never reuse the noise's numbers


def max_cell_shift(patch: int) -> int:
    """The largest offset a grid of `patch`-px cells may move (half a cell: the position stays the nearest cell)."""
    return patch // 2


def check_cell_shift(shift: int, patch: int, name: str = "cell shift") -> int:
    """`shift` as an int in [0, patch // 2], or ValueError naming the range (a float or a bool is refused too);
    `name` is what the message calls it (the CLI flag, where a user typed it)."""
    if not isinstance(shift, (int, np.integer)) or isinstance(shift, bool) or not 0 <= shift <= max_cell_shift(patch):
        raise ValueError(f"{name} {shift} must be a whole number of pixels from 0 (a fixed grid) to "
                         f"{max_cell_shift(patch)} (half of a {patch} px cell)")
    return int(shift)


def cell_offsets(num_steps: int, shift: int, seed: int) -> np.ndarray:
    """[num_steps, 2] (dy, dx) offsets in [-shift, shift), one per DDIM step run; all zeros for shift 0. The upper
    end is left out so that at half a cell every line of the cell is a border equally often (−p/2 and +p/2 would
    both put it on the mid-cell line)."""
    if shift == 0:
        return np.zeros((num_steps, 2), dtype=np.int64)
    rng = np.random.default_rng([seed, SHIFT_STREAM])
    return rng.integers(-shift, shift, size=(num_steps, 2))


def roll_into(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`dst[..., y, x] = src[..., y - dy, x - dx]` with wrap-around (np.roll over the last two axes), written into
    `dst` (which must not be `src`) by four block copies, so nothing image-sized is allocated."""
    h, w = src.shape[-2:]
    dy, dx = dy % h, dx % w
    rows = ((slice(0, h - dy), slice(dy, h)), (slice(h - dy, h), slice(0, dy)))
    cols = ((slice(0, w - dx), slice(dx, w)), (slice(w - dx, w), slice(0, dx)))
    for src_y, dst_y in rows:
        for src_x, dst_x in cols:
            dst[..., dst_y, dst_x] = src[..., src_y, src_x]
    return dst


def resolve_cell_shift(requested: int | None, recorded: int, patch: int) -> int:
    """The shift a run uses: the one asked for (`--cell-shift`), else the bundle's (manifest.sampling.cell_shift,
    0 when absent); a bad value is a one-line EdgediffError naming the range."""
    from edgediff.errors import EdgediffError

    if requested is None:
        return recorded
    try:
        return check_cell_shift(requested, patch, name="--cell-shift")
    except ValueError as e:
        raise EdgediffError(str(e)) from None
