"""The device sampler: bundle → plan → the shared numpy DDIM loop with an onnxruntime denoiser → images.

Imports only numpy, onnxruntime and pillow (through edgediff.images) besides edgediff's own numpy modules; a test
runs it with torch made unimportable. Order of work, chosen so that a budget that cannot be met costs nothing:
read and validate the manifest and the snippet request → plan (refuse here, before any model file is read) →
checksum the denoisers and the lookup table (a damaged denoiser the plan can do without is named in a warning and
planned around) → only then print anything → decode the chosen snippets → create the session → sample pass by
pass → uint8 images, handed to `on_images` as each pass finishes. `BundleSampler` writes nothing (the CLI writes the
files, edgediff.images) and reports what it measured of itself (`Phases`: load time, RSS after loading, the
sampling phase's peak, each step's time).

Determinism: the initial noise of image i is the i-th slice of one seeded stream, drawn pass by pass (numpy's
generator gives the same values whether drawn at once or in chunks), and snippets are chosen for all images up
front, so the images do not depend on cells per call, images per pass or threads.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort  # imported before planning: its RSS is part of "the process now"

from edgediff import images as imgio  # pillow comes in here, also before planning
from edgediff.bundle import (ROLE, BundleError, Manifest, MemoryProfile, check_model_interface, read_manifest,
                             resolve, resolve_bundle, verify_files)
from edgediff.cell_shift import resolve_cell_shift
from edgediff.errors import EdgediffError
from edgediff.int8_gate import int8_failures
from edgediff.runtime import rss
from edgediff.runtime.conditions import check_conditions, choose_snippets
from edgediff.runtime.planner import BudgetError, Plan, available_mb, plan_sampling
from edgediff.runtime.session import create_session, is_cap_error
from edgediff.runtime.start_images import check_start_images, pass_slice
from edgediff.sampling import bundle_eta, resolve_guidance, sample_loop
from edgediff.schedule import Schedule, start_index

MAX_N = 4096
MMAP_THRESHOLD = 65536


def warm_up() -> None:
    """Load, before planning, every library the run will touch later (numpy.random: ~2 MiB; PIL's PNG encoder and
    zlib: ~3.5 MiB), so that "the process now" already contains them and the estimate does not miss them."""
    import io

    import numpy.random  # noqa: F401
    from PIL import Image

    Image.new("RGB", (2, 2)).save(io.BytesIO(), format="PNG")


def load_profile(bundle: Path, manifest: Manifest, log: Callable[[str], None]):
    """The bundle's memory profile; bundles exported without one are measured now (lean mode, fresh processes)."""
    if manifest.memory_profile is not None and manifest.memory_profile.variants:
        return manifest.memory_profile
    from edgediff.runtime.profile import measure_profile

    log("the bundle carries no memory profile: measuring it now in fresh processes (export records it normally)")
    verify_files(bundle, manifest, roles=tuple(ROLE.values()))  # the manifest already read: checksum, do not re-parse
    return measure_profile(bundle, manifest, modes=("lean",))


def onnx_eps_fn(session: ort.InferenceSession, manifest: Manifest, plan: Plan | None = None):
    """numpy → numpy denoiser over onnxruntime (input names from the manifest), with a capped-arena refusal turned
    into a clear error. Benchmarks that build their own session pass no plan."""
    names = [spec.name for spec in manifest.inputs]
    out_name = manifest.outputs[0].name

    def eps_fn(patch, glob, t, pos, snippet):
        feeds = dict(zip(names, (patch, glob, t.astype(np.int64, copy=False), pos, snippet)))
        try:
            return session.run([out_name], feeds)[0]
        except Exception as e:
            if plan is not None and is_cap_error(e):
                raise EdgediffError(
                    f"the memory plan under-estimated activations: onnxruntime's arena hit its cap of "
                    f"{plan.settings.cap_mb} MiB at {plan.cells_per_call} cell(s) per call; raise --memory-budget "
                    "or re-export the bundle to re-measure its memory profile") from None
            raise

    return eps_fn


@dataclass(frozen=True)
class SampleRequest:
    """What one sampling run is asked for: everything but the bundle and the callbacks. Nothing here names a file:
    the runtime returns images and the caller (the CLI) decides where they go."""

    n: int = 16
    steps: int = 25
    seed: int = 0
    memory_budget: int | None = None  # bytes of process peak RSS; None: half of what the machine has available
    snippet: int | None = None
    interpolate: str | None = None
    precision: str = "auto"
    threads: int | None = None
    cells_per_call: int | None = None
    images_per_pass: int | None = None
    cap: bool = True
    keep_float: bool = False
    mode: str | None = None
    guidance: float | None = None  # None: the bundle's recommended scale (manifest.sampling), else 1
    strength: float = 1.0  # < 1: redraw the images given to run(init=...) from this share of the steps (SDEdit)
    cell_shift: int | None = None  # None: the bundle's (manifest.sampling.cell_shift, else 0); edgediff.cell_shift
    eta: float | None = None  # None: the bundle's (manifest.sampling.eta, else 0 = deterministic DDIM)
    # Reset the kernel's peak (VmHWM) after loading, so that Phases.sampling_peak_mb is the sampling phase's own
    # peak. A measuring lever for benchmarks: it makes this process forget its earlier peak, so it is off by default.
    phase_peaks: bool = False

    def check(self) -> None:
        """Refuse bad counts before any work (output paths are the caller's to check: the runtime writes nothing)."""
        if not 1 <= self.n <= MAX_N:
            raise EdgediffError(f"--n {self.n} must be between 1 and {MAX_N}")
        if self.steps < 1:
            raise EdgediffError(f"--steps {self.steps} must be at least 1")
        if not (0.0 < self.strength <= 1.0):  # also refuses NaN
            raise EdgediffError(f"--strength {self.strength} must be above 0 and at most 1 (1 = draw from noise, "
                                "0.5 = keep the start image's layout)")

    @property
    def steps_run(self) -> int:
        """DDIM steps actually run: all of them from noise, the last `strength` share from a start image."""
        return self.steps - start_index(self.steps, self.strength)


@dataclass
class Phases:
    """What a run measured of itself, phase by phase: the figures a benchmark reads instead of patching the sampler
    to observe them. RSS in MiB (the kernel's VmRSS / VmHWM, see runtime/rss.py), times in seconds."""

    before_load_mb: float = math.nan  # RSS right before the onnxruntime session is created
    after_load_mb: float = math.nan  # RSS right after it: what sampling starts from
    load_peak_mb: float = math.nan  # peak RSS up to the end of loading
    load_s: float = math.nan  # creating the session
    peak_reset: bool = False  # the peak was reset after loading (SampleRequest.phase_peaks, where the kernel allows)
    sampling_peak_mb: float = math.nan  # peak RSS at the end of the last pass's loop: of sampling alone with
    #                                     peak_reset, else of the whole process so far
    step_s: list[float] = field(default_factory=list)  # each DDIM step, pass after pass; the first step of a pass
    #                                                    includes the loop's set-up
    sampling_s: float = math.nan  # every pass, the conversion to uint8 included

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampleResult:
    images: np.ndarray  # [n, H, W, C] uint8
    plan: Plan
    peak_mb: float  # peak RSS of the whole process up to the end of sampling (loading included)
    phases: Phases
    floats: np.ndarray | None = None  # [n, C, H, W] in [-1, 1], only with keep_float=True


@dataclass(frozen=True)
class _Opened:
    """The bundle as `plan()` read it, for `run()`: folder, manifest, schedule, and the guidance scale, cell shift
    and η in force."""

    bundle: Path
    manifest: Manifest
    schedule: Schedule
    guidance: float
    cell_shift: int
    eta: float


class BundleSampler:
    """Samples a bundle within a memory budget: `plan()` says what it would do, `run()` does it and returns the
    images with the figures it measured (`Phases`). It writes nothing: files are the caller's (see edgediff.cli).

    The order of work is the module docstring's: refuse bad counts here, plan before any model file is read,
    checksum what will be parsed, snippets before the session. Raises `EdgediffError` (a `BudgetError` for a
    budget no plan can meet). `verbose` also logs the plan's tuning knobs (Plan.tuning).
    """

    def __init__(self, bundle_dir: str | Path | None = None, request: SampleRequest = SampleRequest(), *,
                 log: Callable[[str], None] = lambda s: None, verbose: bool = False):
        request.check()
        self.bundle_dir = bundle_dir
        self.request = request
        self.log = log
        self.verbose = verbose
        self._opened: _Opened | None = None
        self._plan: Plan | None = None

    def plan(self) -> Plan:
        """The plan for this request in this process now (computed once; `run()` uses the same one). Reads the
        bundle's manifest (and measures a profile a bundle lacks, in fresh processes), then, once the budget is
        met, checksums the denoisers and the lookup table; loads no model. Prints nothing before all of that has
        passed. It prepares the process as sampling will run (glibc's mmap threshold, the libraries the run
        touches), because the plan is made against what the process holds."""
        if self._plan is not None:
            return self._plan
        rss.set_mmap_threshold(MMAP_THRESHOLD)  # first: every later allocation behaves as in the profiling process
        req = self.request
        bundle, manifest, schedule = _read_bundle(self.bundle_dir, req.steps)
        check_conditions(manifest, req.snippet, req.interpolate)
        guidance = resolve_guidance(req.guidance, manifest.lut is not None,
                                    default=manifest.sampling.get("guidance", 1.0))
        shift = resolve_cell_shift(req.cell_shift, manifest.sampling.get("cell_shift", 0), manifest.geometry.patch)
        eta = bundle_eta(req.eta, manifest.sampling)
        profile = load_profile(bundle, manifest, self.log)
        warm_up()
        plan, warnings = _checked_plan(req, bundle, manifest, profile, guidance)
        self._opened, self._plan = _Opened(bundle, manifest, schedule, guidance, shift, eta), plan
        for line in warnings:
            self.log(line)
        self.log(plan.describe())  # before the work: what it will do (the progress bar then gives the time left)
        if self.verbose:
            self.log(plan.tuning())
        return plan

    def run(self, on_step: Callable[[int, int], None] | None = None,
            on_images: Callable[[int, np.ndarray], None] | None = None,
            init: np.ndarray | None = None) -> SampleResult:
        """Sample every image as planned; `on_step(done, total)` after each DDIM step of each pass and
        `on_images(start, images_u8)` as each pass finishes, so a caller can keep finished images (Ctrl-C).
        `init` (uint8 [n or 1, h, w, 3], any size: resized here) with the request's strength < 1 redraws those
        images instead of drawing from noise: `sample --init`, and the second stage of a cascade."""
        plan, req = self.plan(), self.request
        init = check_start_images(init, req.n, req.strength)
        bundle, manifest = self._opened.bundle, self._opened.manifest
        conds = choose_snippets(bundle, manifest, req.n, req.seed, req.snippet, req.interpolate)  # checksummed
        start = "" if init is None else f" from start images at strength {req.strength:g}"
        self.log(f"sampling {req.n} image(s) × {req.steps_run} DDIM steps{start}, seed {req.seed}")
        phases = Phases()
        eps_fn = _open_denoiser(bundle, manifest, plan, phases, reset_peak=req.phase_peaks)
        images, floats = _sample_passes(req, self._opened, plan, eps_fn, conds, on_step, phases, on_images, init)
        peak = max(phases.load_peak_mb, rss.peak_mb())  # the load's peak too, should the reset have forgotten it
        return SampleResult(images=images, plan=plan, peak_mb=round(peak, 1), phases=phases, floats=floats)


def _read_bundle(bundle_dir: str | Path | None, steps: int) -> tuple[Path, Manifest, Schedule]:
    """The bundle's folder, manifest and noise schedule, refusing a bundle this sampler cannot run for `steps`."""
    bundle = resolve_bundle(bundle_dir)
    manifest = read_manifest(bundle)
    if manifest.prediction != "epsilon":
        raise EdgediffError(f"bundle predicts {manifest.prediction!r}; this edgediff samples epsilon models only")
    schedule = manifest.schedule
    if steps > schedule.num_train_timesteps:
        raise EdgediffError(f"--steps {steps} exceeds the bundle's {schedule.num_train_timesteps} training "
                            "timesteps")
    return bundle, manifest, schedule


def _plan(req: SampleRequest, manifest: Manifest, profile: MemoryProfile, guidance: float) -> Plan:
    """The plan for `req`. With no budget (and the cap on) the budget is what this process holds now plus half of
    the machine's available memory, as `sample --help` says, and the plan says so (`budget_default`): it once
    printed "no budget" next to an arena capped at that very figure."""
    budget_mb = None if req.memory_budget is None else req.memory_budget / rss.MIB
    auto = budget_mb is None and req.cap
    if auto:
        avail = available_mb()
        budget_mb = None if avail is None else rss.current_mb() + avail / 2
    plan = plan_sampling(manifest, profile, n=req.n, now_mb=rss.current_mb(),
                         peak_so_far_mb=rss.peak_mb(), budget_mb=budget_mb, precision=req.precision,
                         threads=req.threads, cells_per_call=req.cells_per_call, images_per_pass=req.images_per_pass,
                         cap=req.cap, keep_float=req.keep_float, mode=req.mode, guidance=guidance, auto=auto)
    plan.budget_default = auto and budget_mb is not None
    return plan


def _damaged_denoisers(bundle: Path, manifest: Manifest) -> dict[str, str]:
    """{variant: why} for each denoiser file that fails its size or sha256 check. Every denoiser is checked, not
    only the planned one: a flipped byte in the int8 file let `sample` run fp32 without a word while `info`
    refused the whole bundle."""
    damaged = {}
    for variant, role in ROLE.items():
        if role in manifest.files:
            try:
                verify_files(bundle, manifest, roles=(role,))
            except BundleError as e:
                damaged[variant] = str(e)
    return damaged


def _checked_plan(req: SampleRequest, bundle: Path, manifest: Manifest, profile: MemoryProfile,
                  guidance: float) -> tuple[Plan, list[str]]:
    """The plan, after checksumming what it may read, and the warnings to print before it. A budget refusal still
    comes first (nothing read); then a damaged denoiser is refused if the run needs it (pinned --precision, or no
    other), planned around with a warning if not; the lookup table must be intact."""
    plan = _plan(req, manifest, profile, guidance)
    damaged = _damaged_denoisers(bundle, manifest)
    if plan.variant in damaged:
        intact = [v for v in ROLE if ROLE[v] in manifest.files and v not in damaged]
        if req.precision != "auto" or not intact:
            raise BundleError(damaged[plan.variant])
        manifest = replace(manifest, files={r: e for r, e in manifest.files.items() if r != ROLE[plan.variant]})
        plan = _plan(req, manifest, profile, guidance)
    if manifest.lut is not None:
        verify_files(bundle, manifest, roles=("lut_codes", "lut_codebooks"))
    warnings = [f"warning: {why} (this run uses the intact {plan.variant} denoiser)" for why in damaged.values()]
    if plan.variant == "int8" and int8_failures(manifest.quality.int8):
        warnings.append(_int8_gate_warning(req, manifest, profile, guidance))
    return plan, warnings


def _int8_gate_warning(req: SampleRequest, manifest: Manifest, profile: MemoryProfile, guidance: float) -> str:
    """One line when int8 runs although it failed the bundle's quality gate (--precision int8, or a budget fp32
    does not fit): its images may differ visibly from fp32's, and what would run fp32 instead."""
    why = "; ".join(int8_failures(manifest.quality.int8))
    if req.precision == "int8":
        fix = "drop --precision int8 to run fp32"
    else:
        try:
            _plan(replace(req, precision="fp32"), manifest, profile, guidance)
            fix = "--precision fp32 runs fp32"
        except BudgetError as e:
            fix = f"fp32 needs --memory-budget {e.floor_mb:.0f}MiB or more"
        except EdgediffError:
            fix = "this bundle cannot run fp32 here"
    return (f"warning: running the int8 denoiser although it failed the bundle's quality gate ({why}): images may "
            f"differ visibly from fp32's; {fix}")


def _open_denoiser(bundle: Path, manifest: Manifest, plan: Plan, phases: Phases, reset_peak: bool):
    """The planned denoiser as an eps function, after checking that the session's inputs and outputs are what the
    manifest says (the manifest must tell the truth). Records the load phase in `phases`."""
    phases.before_load_mb = rss.current_mb()
    t0 = time.perf_counter()
    session = create_session(resolve(bundle, manifest.files[ROLE[plan.variant]]), plan.settings)
    phases.load_s = time.perf_counter() - t0
    phases.after_load_mb = rss.current_mb()
    phases.load_peak_mb = rss.peak_mb()
    if reset_peak:
        phases.peak_reset = rss.reset_peak()  # from here VmHWM measures the sampling phase alone
    check_model_interface(manifest, session.get_inputs(), session.get_outputs())
    return onnx_eps_fn(session, manifest, plan)


def _step_timer(phases: Phases, pass_index: int, steps: int, passes: int,
                on_step: Callable[[int, int], None] | None) -> Callable[[int], None]:
    """The loop's per-step callback for one pass: records the step's time and reports overall progress."""
    last = [time.perf_counter()]

    def step(s: int) -> None:
        now = time.perf_counter()
        phases.step_s.append(now - last[0])
        last[0] = now
        if on_step is not None:
            on_step(pass_index * steps + s + 1, passes * steps)

    return step


def _sample_passes(req: SampleRequest, opened: _Opened, plan: Plan, eps_fn, conds: np.ndarray,
                   on_step: Callable[[int, int], None] | None, phases: Phases,
                   on_images: Callable[[int, np.ndarray], None] | None = None, init: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """All images, `plan.images_per_pass` at a time, as uint8 [n, H, W, C] (and float [n, C, H, W] with
    keep_float), each pass handed to `on_images(start, images)` when done. Each pass draws its slice of one seeded
    noise stream, so passes do not change the images; a pass's start images (if any) are resized and converted to
    floats only for that pass."""
    n, steps, seed, manifest = req.n, req.steps, req.seed, opened.manifest
    c, h = manifest.channels, manifest.image_size
    t0 = time.perf_counter()
    result = np.empty((n, h, h, c), dtype=np.uint8)
    floats = np.empty((n, c, h, h), dtype=np.float32) if req.keep_float else None
    rng = np.random.default_rng(seed)  # the same stream as edgediff.sampling.initial_noise, drawn pass by pass
    g = plan.images_per_pass
    passes = (n + g - 1) // g
    for k, start in enumerate(range(0, n, g)):
        stop = min(n, start + g)
        x_T = rng.standard_normal((stop - start, c, h, h), dtype=np.float32)
        x0 = None if init is None else imgio.to_float(imgio.resize(pass_slice(init, start, stop), h))
        x = sample_loop(eps_fn, geom=manifest.geometry, n=stop - start, steps=steps, seed=seed,
                        snippets=conds[start:stop], cells_per_call=plan.cells_per_call, schedule=opened.schedule,
                        x_T=x_T, on_step=_step_timer(phases, k, req.steps_run, passes, on_step),
                        guidance=opened.guidance, init=x0, strength=req.strength, cell_shift=opened.cell_shift,
                        eta=opened.eta, first_image=start)
        del x0
        phases.sampling_peak_mb = rss.peak_mb()
        del x_T
        for i in range(stop - start):  # one image at a time keeps the float temporaries small
            result[start + i] = imgio.to_uint8(x[i : i + 1])[0]
            if floats is not None:
                floats[start + i] = x[i]
        del x
        if on_images is not None:
            on_images(start, result[start:stop])
    phases.sampling_s = time.perf_counter() - t0
    return result, floats


def sample_bundle(bundle_dir: str | Path | None = None, *, log: Callable[[str], None] = lambda s: None,
                  on_step: Callable[[int, int], None] | None = None, **options) -> SampleResult:
    """`BundleSampler(bundle_dir, SampleRequest(**options), log=log).run(on_step)`: the one-call form for callers
    that need no plan first (eval, audit, tests, benchmarks). Writes nothing."""
    return BundleSampler(bundle_dir, SampleRequest(**options), log=log).run(on_step)
