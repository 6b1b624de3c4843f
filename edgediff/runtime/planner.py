"""The budget planner: from a memory budget, this process's RSS now and the bundle's measured memory profile, pick
how to sample (precision, session mode, cells per call, images per pass, threads, arena cap), or refuse at once.

What the budget means: the peak RSS of the whole process (interpreter, libraries, weights, buffers, activations),
as the kernel counts it (VmHWM). The estimate of a plan (priced in edgediff.runtime.estimates) is

    peak = RSS now (interpreter + numpy + onnxruntime + pillow, all imported before planning)
         + resident(variant, mode)                    measured at export (RSS that stays after loading)
         + activations(variant, mode, cells per call)  measured at 1, 2, 4 cells; linear beyond, +10% there
         + buffers(images per pass, cells per call)   computed: x_T, x_t, x_{t-1}, pooled global content, the
                                                       batch's inputs and DDIM temporaries, uint8 results, grid
         + margin                                      allocator slack

and two earlier phases are checked too: the bank decode (before the model loads) and the load itself, whose
transient peak (profile.settings["load_peak_mb"]) exceeds the resident figure when ORT reorders weights. The planner takes the fastest plan
(by the profile's measured ms per call) whose estimate fits, of the preferred variant whenever one of its plans
fits: int8 when the bundle's measured int8 quality passes the ship gate (edgediff/int8_gate.py: smaller and
faster, shown to change little), else fp32 (it matches the torch sampler) with int8 only when nothing else fits. A budget below the smallest
plan is refused with the budget that would work, before any model is loaded. The leftover headroom becomes the
cap of onnxruntime's arena, so an activation estimate that turns out wrong is a clear error, not an OOM kill.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgediff.bundle import ROLE, Manifest, MemoryProfile, VariantProfile, variant_key
from edgediff.errors import EdgediffError
from edgediff.int8_gate import int8_ships
from edgediff.sampling import calls_per_chunk, cells_per_chunk, rows_per_cell
from edgediff.runtime.estimates import estimate_mb, ms_per_call
from edgediff.runtime.session import MODES, SessionSettings, default_threads

AUTO_SPEED_SLACK = 0.10  # with no budget given: the leanest plan within 10% of the fastest estimate
ARENA_SLACK_MB = 4.0  # the arena's region granularity: never cap below activations + this
PRECISIONS = ("auto", "fp32", "int8")


# The budget a refusal suggests must work when the user reruns with it, and a fresh process's RSS differs from this
# one's by a few hundred KiB (seen: 58.4 vs 58.5 MiB between two runs): suggest the floor plus this, rounded up.
RERUN_SLACK_MB = 0.5


class BudgetError(EdgediffError):
    """The budget cannot be met by any plan; the message names the smallest budget that would work."""

    def __init__(self, message: str, floor_mb: float):
        super().__init__(message)
        self.floor_mb = floor_mb


@dataclass
class Plan:
    """How one `edgediff sample` run will use memory and time; printed to the user and recorded by benchmarks."""

    variant: str
    mode: str
    cells_per_call: int
    images_per_pass: int
    threads: int
    settings: SessionSettings
    budget_mb: float | None
    estimate_mb: float
    floor_mb: float
    breakdown: dict = field(default_factory=dict)
    est_ms_per_step: float | None = None
    guidance: float = 1.0
    budget_default: bool = False  # budget_mb is the default (this process + half the available memory), not given

    def to_dict(self) -> dict:
        d = asdict(self)
        d["settings"] = self.settings.to_dict()
        return d

    def describe(self) -> str:
        """The plan in plain words: which denoiser, how the work is batched, the expected peak and the budget it
        must stay under. The tuning knobs behind it are `tuning()` (`sample --verbose`)."""
        if self.budget_mb is None:
            budget = "no memory budget"
        else:
            budget = f"budget {self.budget_mb:,.1f} MiB"
            budget += " (the default: this process plus half the available memory)" if self.budget_default else ""
        guided = "" if self.guidance == 1.0 else f", guidance {self.guidance:g} (each cell runs twice)"
        return (f"plan: {self.variant} denoiser, {self.cells_per_call} cell(s) per call, {self.images_per_pass} "
                f"image(s) at a time, {self.threads} thread(s){guided}; expected peak {self.estimate_mb:,.1f} MiB, "
                f"{budget}")

    def tuning(self) -> str:
        """The knobs behind the plan, for whoever tunes it: session mode and settings, the arena cap (the budget's
        headroom), the leanest plan's peak and the estimated time per step."""
        s = self.settings
        cap = "uncapped" if s.cap_mb is None else f"capped at {s.cap_mb:,.1f} MiB"
        mmap = f", mmap threshold {s.mmap_threshold // 1024} KiB" if s.mmap_threshold else ""
        step = "" if self.est_ms_per_step is None else f", estimated {self.est_ms_per_step:,.1f} ms per step"
        return (f"tuning: {self.mode} session (opt {s.opt_level}, memory pattern {'on' if s.mem_pattern else 'off'}"
                f"{mmap}), onnxruntime arena {cap}; leanest plan peaks at {self.floor_mb:,.1f} MiB{step}")


# ---------------------------------------------------------------------------------------------------------------
def calls_per_step(total_cells: int, rows_per_call: int, guidance: float) -> int:
    """Denoiser calls per DDIM step, chunked exactly as edgediff.sampling.sample_loop chunks them."""
    chunks = math.ceil(total_cells / cells_per_chunk(rows_per_call, guidance))
    return chunks * calls_per_chunk(rows_per_call, guidance)


def _cell_options(total_cells: int) -> list[int]:
    opts = {1 << k for k in range(0, 16) if (1 << k) < total_cells} | {total_cells}
    return sorted(opts)


# ---------------------------------------------------------------------------------------------------------------
# the planner


@dataclass(frozen=True)
class Candidate:
    """One plan the planner could pick: its choices, its estimated peak (and parts) and its estimated step time."""

    variant: str
    rank: int  # the variant's place in the preference order (_usable_variants): the lowest rank that fits wins
    mode: str
    images_per_pass: int
    cells_per_call: int
    estimate_mb: float
    parts: dict
    step_ms: float | None
    profile: VariantProfile


def _check_options(n: int, precision: str, mode: str | None) -> None:
    """Refuse a bad mode, precision or image count with a one-line error before anything is estimated."""
    if mode is not None and mode not in MODES:
        raise EdgediffError(f"mode {mode!r} must be one of {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise EdgediffError(f"--precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    if n < 1:
        raise EdgediffError(f"--n {n} must be at least 1")


def _usable_variants(manifest: Manifest, profile: MemoryProfile, precision: str) -> list[str]:
    """The denoiser variants to choose from, in preference order: int8 first when the bundle's measured int8 quality
    passes the ship gate (edgediff/int8_gate.py), else fp32 first. A precision the bundle cannot serve is refused
    here, naming the precisions that would work, rather than surfacing later as a missing file."""
    order = ("int8", "fp32") if int8_ships(manifest.quality.int8) else ("fp32", "int8")
    variants = [v for v in order if ROLE[v] in manifest.files and v in profile.variants]
    if precision != "auto":
        if ROLE[precision] not in manifest.files:
            raise EdgediffError(f"--precision {precision}: this bundle has no {precision} denoiser; "
                                f"use {' or '.join(['auto'] + variants)}")
        if precision not in profile.variants:
            raise EdgediffError(f"--precision {precision}: the bundle's memory profile lacks it; re-export the bundle")
        variants = [precision]
    if not variants:
        raise EdgediffError("the bundle's memory profile covers none of its denoisers; re-export the bundle")
    return variants


def _check_pins(n: int, cells_per_call: int | None, images_per_pass: int | None) -> None:
    """Pinned batch sizes (benchmarks, tests, CLI overrides) must be possible for this request."""
    if cells_per_call is not None and cells_per_call < 1:
        raise EdgediffError(f"--cells-per-call {cells_per_call} must be at least 1")
    if images_per_pass is not None and not 1 <= images_per_pass <= n:
        raise EdgediffError(f"--images-per-pass {images_per_pass} must be between 1 and --n {n}")


def _load_peaks(profile: MemoryProfile) -> dict[str, float]:
    """The measured transient peak of loading each variant/mode (profile.settings["load_peak_mb"]); bundles that
    predate the measurement, or carry a malformed entry, simply contribute none."""
    peaks = profile.settings.get("load_peak_mb", {}) if isinstance(profile.settings, dict) else {}
    if not isinstance(peaks, dict):
        return {}
    return {k: float(v) for k, v in peaks.items() if isinstance(v, (int, float))}


def _candidates(manifest: Manifest, profile: MemoryProfile, variants: list[str], *, n: int, now_mb: float,
                peak_so_far_mb: float, cells_per_call: int | None, images_per_pass: int | None, keep_float: bool,
                mode: str | None, guidance: float) -> list[Candidate]:
    """Every (variant, mode, images per pass, cells per call) the profile can estimate, pinned choices honoured.
    A plan's peak is never below what this process has already reached, since VmHWM cannot go down."""
    cells_per_image = manifest.grid * manifest.grid
    load_peaks = _load_peaks(profile)
    out = []
    for rank, variant in enumerate(variants):
        for mode_name in ([mode] if mode else MODES):
            key = variant_key(variant, mode_name)
            if key not in profile.variants:
                continue
            vp = profile.variants[key]
            for g in ([images_per_pass] if images_per_pass else sorted({1, n} | {k for k in (2, 4, 8, 16) if k < n})):
                rows_max = g * cells_per_image * rows_per_cell(guidance)
                for c in ([cells_per_call] if cells_per_call else _cell_options(rows_max)):
                    if c > rows_max and cells_per_call is None:
                        continue
                    est, parts = estimate_mb(manifest, vp, now_mb, n, g, c, keep_float, load_peaks.get(key))
                    ms = ms_per_call(vp, c)
                    step_ms = None if ms is None else ms * calls_per_step(n * cells_per_image, c, guidance)
                    out.append(Candidate(variant, rank, mode_name, g, c, max(est, peak_so_far_mb), parts, step_ms, vp))
    if not out:
        raise EdgediffError("the bundle's memory profile has no usable entries; re-export the bundle")
    return out


def _floor_mb(candidates: list[Candidate], budget_mb: float | None, n: int, now_mb: float) -> float:
    """The smallest estimated peak (over lean-mode plans when there are any: lean is what a tight budget gets).
    A budget below it is refused now, before any model loads, naming the budget that would work."""
    lean = [cand for cand in candidates if cand.mode == "lean"] or candidates
    floor_cand = min(lean, key=lambda cand: cand.estimate_mb)
    floor = floor_cand.estimate_mb
    if budget_mb is not None and budget_mb < floor:
        need = math.ceil(floor + RERUN_SLACK_MB)
        raise BudgetError(
            f"--memory-budget {budget_mb:.1f} MiB is too small for this bundle and --n {n}: the leanest plan "
            f"({floor_cand.variant}, {floor_cand.cells_per_call} cell per call, {floor_cand.images_per_pass} image "
            f"per pass) peaks at about {floor:.1f} MiB (this process already holds {now_mb:.1f} MiB); "
            f"pass --memory-budget {need}MiB or more",
            floor_mb=float(need),
        )
    return math.ceil(floor * 10) / 10


def _choose(candidates: list[Candidate], budget_mb: float | None, auto: bool) -> Candidate:
    """The fastest fitting plan of the most preferred variant that fits (see _usable_variants). With `auto`, the
    leanest plan within AUTO_SPEED_SLACK of that speed instead."""
    fits = [cand for cand in candidates if budget_mb is None or cand.estimate_mb <= budget_mb]
    best_rank = min(cand.rank for cand in fits)
    fits = [cand for cand in fits if cand.rank == best_rank]
    best = min(fits, key=lambda cand: (float("inf") if cand.step_ms is None else cand.step_ms, cand.estimate_mb))
    if auto and best.step_ms is not None:
        limit = best.step_ms * (1 + AUTO_SPEED_SLACK)
        near = [cand for cand in fits if cand.step_ms is not None and cand.step_ms <= limit]
        best = min(near, key=lambda cand: (cand.estimate_mb, cand.step_ms))
    return best


def _session_settings(best: Candidate, threads: int, cap: bool, budget_mb: float | None) -> SessionSettings:
    """The chosen mode's session settings, with the arena capped at the budget's headroom when the mode caps it."""
    settings = MODES[best.mode].with_(threads=threads)
    if settings.arena != "capped":
        return settings
    if not (cap and budget_mb is not None):
        return settings.with_(cap_mb=None)
    # The arena gets all the headroom above what is already committed (start + weights): the arena's bytes are not
    # the RSS growth the profile measured (it works in >= 1 MiB regions and reuses freed heap pages), so a cap at
    # the measured activations would refuse plans that fit. Measured: a 32 px model whose calls grow RSS by
    # 1.1 MiB needs more than 3.2 MiB of arena.
    parts = best.parts
    headroom = budget_mb - parts["start_mb"] - parts["resident_mb"]
    return settings.with_(cap_mb=round(max(parts["activation_mb"] + ARENA_SLACK_MB, headroom), 1))


def plan_sampling(
    manifest: Manifest,
    profile: MemoryProfile,
    *,
    n: int,
    now_mb: float,
    peak_so_far_mb: float = 0.0,
    budget_mb: float | None,
    precision: str = "auto",
    threads: int | None = None,
    cells_per_call: int | None = None,
    images_per_pass: int | None = None,
    cap: bool = True,
    keep_float: bool = False,
    mode: str | None = None,
    guidance: float = 1.0,
    auto: bool = False,
) -> Plan:
    """The fastest plan whose estimated peak fits `budget_mb`, or `BudgetError` naming the smallest that works.

    `cells_per_call` / `images_per_pass` / `mode` pin those choices (benchmarks and tests); `cap=False` leaves the
    arena uncapped (used to show that a refused budget really is too small). With `guidance` != 1 every cell
    is evaluated twice, so calls carry up to twice as many rows and a step costs twice the rows. `auto` (the user
    gave no budget; `budget_mb` is then the machine's spare memory) takes the leanest plan whose estimated step time
    is within AUTO_SPEED_SLACK of the fastest: memory is not spent for a speed-up the profile cannot show.
    """
    _check_options(n, precision, mode)
    variants = _usable_variants(manifest, profile, precision)
    _check_pins(n, cells_per_call, images_per_pass)
    nthreads = threads or default_threads()
    candidates = _candidates(manifest, profile, variants, n=n, now_mb=now_mb, peak_so_far_mb=peak_so_far_mb,
                             cells_per_call=cells_per_call, images_per_pass=images_per_pass, keep_float=keep_float,
                             mode=mode, guidance=guidance)
    floor_mb = _floor_mb(candidates, budget_mb, n, now_mb)
    best = _choose(candidates, budget_mb, auto)
    return Plan(variant=best.variant, mode=best.mode, cells_per_call=best.cells_per_call,
                images_per_pass=best.images_per_pass, threads=nthreads,
                settings=_session_settings(best, nthreads, cap, budget_mb), budget_mb=budget_mb,
                estimate_mb=round(best.estimate_mb, 1), floor_mb=floor_mb, breakdown=best.parts,
                est_ms_per_step=None if best.step_ms is None else round(best.step_ms, 1), guidance=guidance)


def available_mb() -> float | None:
    """MemAvailable from /proc/meminfo (MiB), used when no budget is given: plan within half of it."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None
