"""What a sampling plan costs, from the bundle's measured memory profile and the shapes: activations and time per
call (interpolated between the export's measurements, extrapolated with care beyond them), the loop's numpy
buffers, the decoded bank, and the process peak of one candidate plan over its three phases.

Why its own module: the planner (edgediff.runtime.planner) chooses among candidates; these functions only price
them, and the tests and the peak-memory benchmarks check the prices against measured peaks on their own.
"""

from __future__ import annotations

from edgediff.bundle import Manifest, VariantProfile
from edgediff.cells import row_floats
from edgediff.errors import EdgediffError
from edgediff.units import MIB

MARGIN_MB = 2.0  # allocator slack: small on purpose, a refused budget must be truly too small
MARGIN_FRAC = 0.02
EXTRAPOLATION_SLACK = 1.10


def _points(measured: dict) -> list[tuple[int, float]]:
    """A profile table ({"cells": value} as stored in JSON) as (cells, value) points in increasing cells."""
    return sorted((int(k), float(v)) for k, v in measured.items())


def _interpolate(pts: list[tuple[int, float]], x: int) -> float | None:
    """The piecewise-linear value at `x` through measured `pts` (sorted): the measurement itself at a measured
    point, linear between its neighbours inside the measured range, None outside it, where each caller
    extrapolates in its own way (activations grow with a safety slack, time assumes no further batching gain)."""
    table = dict(pts)
    if x in table:
        return table[x]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 < x < x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def activation_mb(vp: VariantProfile, cells: int) -> float:
    """Activation MiB at `cells` per call: measured where available, else linear through the measured points."""
    pts = _points(vp.activation_mb)
    if not pts:
        raise EdgediffError("the bundle's memory profile has no activation measurements; re-export the bundle")
    inside = _interpolate(pts, cells)
    if inside is not None:
        return inside
    if cells < pts[0][0]:
        return pts[0][1]
    kmax, amax = pts[-1]
    slopes = [(a1 - a0) / (k1 - k0) for (k0, a0), (k1, a1) in zip(pts, pts[1:])]
    slope = max([s for s in slopes if s > 0] + [amax / kmax])
    return amax + slope * (cells - kmax) * EXTRAPOLATION_SLACK


def ms_per_call(vp: VariantProfile, cells: int) -> float | None:
    """Estimated wall time of one call (None if not measured): interpolated between the measured points and, beyond
    the largest, at that point's time per cell. Extrapolating the measured slope instead promised batching gains
    that large cells do not give (512 px, 64 px cells, no budget: 64 cells per call ran 4% faster than 1, at
    2.9 GiB instead of 128 MiB; benchmarks/results/peak_memory.json)."""
    pts = _points(vp.ms_per_call)
    if not pts:
        return None
    inside = _interpolate(pts, cells)
    if inside is not None:
        return inside
    if len(pts) == 1 or cells < pts[0][0]:
        return pts[0][1] * cells / pts[0][0]
    kmax, amax = pts[-1]
    return amax * cells / kmax  # beyond what was measured: no further batching gain is assumed


def buffers_mb(m: Manifest, n: int, images_per_pass: int, cells: int, keep_float: bool = False) -> float:
    """Numpy buffers of the sampling loop and its output, computed from the shapes (bytes are exact)."""
    c, h, p = m.channels, m.image_size, m.patch_size
    image = c * h * h * 4
    loop = 3 * images_per_pass * image  # x_T (the pass's noise), x_t, x_{t-1}
    loop += images_per_pass * c * p * p * 4  # pooled global content
    # inputs and eps of one call (edgediff.cells.row_floats, halo included), and the DDIM temporaries
    loop += cells * (row_floats(m.geometry, m.snippet_dim) + 5 * c * p * p + 1) * 4
    results = n * h * h * c  # uint8 images
    results += 3 * n * (h + 2) * (h + 2) * c  # the grid sheet, PIL's copy and the PNG encoder's buffer
    results += n * m.snippet_dim * 4
    if keep_float:
        results += n * image
    return (loop + results) / MIB


def bank_mb(m: Manifest) -> float:
    """The decoded LUT (entries × dim float32) plus its codes and codebooks, held while snippets are chosen."""
    if m.lut is None:
        return 0.0
    lut = m.lut
    return (lut.entries * lut.dim * 4 + lut.entries * lut.subvectors + lut.centroids * lut.dim * 4) / MIB


def _margin(total: float) -> float:
    return MARGIN_MB + MARGIN_FRAC * total


def estimate_mb(m: Manifest, vp: VariantProfile, now_mb: float, n: int, images_per_pass: int, cells: int,
                keep_float: bool = False, load_peak_mb: float | None = None) -> tuple[float, dict]:
    """Estimated process peak for one candidate plan, and its parts: the largest of three phases (choosing
    snippets from the decoded bank, creating the session, the sampling loop), each with the allocator margin."""
    parts = {
        "start_mb": now_mb,
        "resident_mb": vp.resident_mb,
        "activation_mb": activation_mb(vp, cells),
        "buffers_mb": buffers_mb(m, n, images_per_pass, cells, keep_float),
    }
    body = sum(parts.values())
    parts["margin_mb"] = _margin(body)
    snippets = n * m.snippet_dim * 4 / MIB
    bank_phase = now_mb + bank_mb(m) + snippets
    parts["bank_phase_mb"] = bank_phase + _margin(bank_phase)
    load_phase = now_mb + max(vp.resident_mb, load_peak_mb or 0.0) + snippets
    parts["load_phase_mb"] = load_phase + _margin(load_phase)
    total = max(body + parts["margin_mb"], parts["bank_phase_mb"], parts["load_phase_mb"])
    return total, {k: round(v, 2) for k, v in parts.items()}
