"""The device sampler: bundle → plan → the shared numpy DDIM loop with an onnxruntime denoiser → images.

Imports only numpy, onnxruntime and pillow (through edgediff.images) besides edgediff's own numpy modules; a test
runs it with torch made unimportable. Order of work, chosen so that a budget that cannot be met costs nothing:
read and validate the manifest → plan (refuse here, before any model file is read) → checksum the files the plan
needs → decode the chosen snippets from the lookup table → create the session → sample pass by pass → PNGs.

Determinism: the initial noise of image i is the i-th slice of one seeded stream, drawn pass by pass (numpy's
generator gives the same values whether drawn at once or in chunks), and snippets are chosen for all images up
front, so the images do not depend on cells per call, images per pass or threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort  # imported before planning: its RSS is part of "the process now"

from edgediff import images as imgio  # pillow comes in here, also before planning
from edgediff.bundle import Manifest, MemoryProfile, check_model_interface, open_bundle, read_manifest, resolve
from edgediff.errors import EdgediffError, Interrupted
from edgediff.lut import decode
from edgediff.runtime import rss
from edgediff.bundle import ROLE
from edgediff.runtime.planner import Plan, available_mb, plan_sampling
from edgediff.runtime.session import create_session, is_cap_error
from edgediff.sampling import resolve_guidance, sample_loop
from edgediff.schedule import Schedule
from edgediff import snippets as snip

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "default_bundle"
MAX_N = 4096
MMAP_THRESHOLD = 65536


@dataclass
class SampleResult:
    images: np.ndarray  # [n, H, W, C] uint8
    plan: Plan
    peak_mb: float
    wall_s: float
    paths: list[Path] = field(default_factory=list)
    floats: np.ndarray | None = None  # [n, C, H, W] in [-1, 1], only with keep_float=True


def warm_up() -> None:
    """Load, before planning, every library the run will touch later (numpy.random: ~2 MiB; PIL's PNG encoder and
    zlib: ~3.5 MiB), so that "the process now" already contains them and the estimate does not miss them."""
    import io

    import numpy.random  # noqa: F401
    from PIL import Image

    Image.new("RGB", (2, 2)).save(io.BytesIO(), format="PNG")


def resolve_bundle(bundle_dir: str | Path | None) -> Path:
    """The bundle to use: the given folder, else the default bundle shipped in the package (if installed)."""
    if bundle_dir is not None:
        return Path(bundle_dir)
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        raise EdgediffError("no default bundle is installed in this edgediff package yet; pass BUNDLE_DIR "
                            "(a folder written by `edgediff export`)")
    return DEFAULT_BUNDLE


def load_profile(bundle: Path, manifest: Manifest, log: Callable[[str], None]):
    """The bundle's memory profile; bundles exported without one are measured now (lean mode, fresh processes)."""
    if manifest.memory_profile is not None and manifest.memory_profile.variants:
        return manifest.memory_profile
    from edgediff.runtime.profile import measure_profile

    log("the bundle carries no memory profile: measuring it now in fresh processes (export records it normally)")
    open_bundle(bundle, roles=tuple(ROLE.values()))
    return measure_profile(bundle, manifest, modes=("lean",))


def choose_snippets(bundle: Path, manifest: Manifest, n: int, seed: int, snippet: int | None,
                    interpolate: str | None) -> np.ndarray:
    """[n, snippet_dim] conditions: decoded from the LUT (a gather) and chosen by edgediff.snippets; a bundle
    without a memory bank samples with the null (zero) snippet."""
    if manifest.lut is None:
        if snippet is not None or interpolate is not None:
            raise EdgediffError("this bundle has no memory bank (exported from a --no-memory run): drop --snippet / "
                                "--interpolate")
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
    """What one sampling run was asked for, as `sample_bundle`'s keyword arguments spell it: one value to hand to
    the steps below instead of seventeen loose arguments. Callbacks (log, on_step) are not part of the request."""

    bundle_dir: str | Path | None = None
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
    out: str | Path | None = None
    out_dir: str | Path | None = None
    keep_float: bool = False
    mode: str | None = None
    guidance: float | None = None


def _check_request(req: SampleRequest) -> None:
    """Refuse bad counts and unwritable outputs before any work: a bad path must not cost the whole run first."""
    if not 1 <= req.n <= MAX_N:
        raise EdgediffError(f"--n {req.n} must be between 1 and {MAX_N}")
    if req.steps < 1:
        raise EdgediffError(f"--steps {req.steps} must be at least 1")
    if req.out is not None:
        imgio.check_output_file(req.out, "--out")
    if req.out_dir is not None:
        imgio.check_output_dir(req.out_dir, "--out-dir")


def _read_bundle(req: SampleRequest) -> tuple[Path, Manifest, Schedule]:
    """The bundle's folder, manifest and noise schedule, refusing a bundle this sampler cannot run for `req`."""
    bundle = resolve_bundle(req.bundle_dir)
    manifest = read_manifest(bundle)
    if manifest.prediction != "epsilon":
        raise EdgediffError(f"bundle predicts {manifest.prediction!r}; this edgediff samples epsilon models only")
    schedule = manifest.noise_schedule()
    if req.steps > schedule.num_train_timesteps:
        raise EdgediffError(f"--steps {req.steps} exceeds the bundle's {schedule.num_train_timesteps} training "
                            "timesteps")
    return bundle, manifest, schedule


def _plan(req: SampleRequest, manifest: Manifest, profile: MemoryProfile, guidance: float) -> Plan:
    """The plan for `req`. With no budget (and the cap on) the planner works within half the machine's spare
    memory, but the plan reports no budget: that is what the user asked for; the cap still prevents an OOM kill."""
    budget_mb = None if req.memory_budget is None else req.memory_budget / rss.MIB
    auto = budget_mb is None and req.cap
    if auto:
        avail = available_mb()
        budget_mb = None if avail is None else rss.current_mb() + avail / 2
    plan = plan_sampling(manifest, profile, n=req.n, steps=req.steps, now_mb=rss.current_mb(),
                         peak_so_far_mb=rss.peak_mb(), budget_mb=budget_mb, precision=req.precision,
                         threads=req.threads, cells_per_call=req.cells_per_call, images_per_pass=req.images_per_pass,
                         cap=req.cap, keep_float=req.keep_float, mode=req.mode, guidance=guidance, auto=auto)
    if auto:
        plan.budget_mb = None
    return plan


def _open_denoiser(bundle: Path, manifest: Manifest, plan: Plan):
    """The planned denoiser as an eps function, after checking that the session's inputs and outputs are what the
    manifest says (the manifest must tell the truth)."""
    session = create_session(resolve(bundle, manifest.files[ROLE[plan.variant]]), plan.settings)
    check_model_interface(manifest, session.get_inputs(), session.get_outputs())
    return onnx_eps_fn(session, manifest, plan)


def _sample_passes(req: SampleRequest, manifest: Manifest, schedule: Schedule, plan: Plan, eps_fn,
                   conds: np.ndarray, guidance: float, on_step: Callable[[int, int], None] | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """All images, `plan.images_per_pass` at a time, as uint8 [n, H, W, C] (and float [n, C, H, W] with
    keep_float). Each pass draws its slice of one seeded noise stream, so passes do not change the images."""
    n, steps, seed = req.n, req.steps, req.seed
    c, h = manifest.channels, manifest.image_size
    result = np.empty((n, h, h, c), dtype=np.uint8)
    floats = np.empty((n, c, h, h), dtype=np.float32) if req.keep_float else None
    rng = np.random.default_rng(seed)  # the same stream as edgediff.sampling.initial_noise, drawn pass by pass
    g = plan.images_per_pass
    passes = (n + g - 1) // g
    for k, start in enumerate(range(0, n, g)):
        stop = min(n, start + g)
        x_T = rng.standard_normal((stop - start, c, h, h), dtype=np.float32)
        step_cb = None if on_step is None else (lambda s, k=k: on_step(k * steps + s + 1, passes * steps))
        x = sample_loop(eps_fn, n=stop - start, image_size=h, channels=c, grid=manifest.grid, steps=steps, seed=seed,
                        snippets=conds[start:stop], cells_per_call=plan.cells_per_call, schedule=schedule, x_T=x_T,
                        on_step=step_cb, guidance=guidance, halo=manifest.halo)
        del x_T
        for i in range(stop - start):  # one image at a time keeps the float temporaries small
            result[start + i] = imgio.to_uint8(x[i : i + 1])[0]
            if floats is not None:
                floats[start + i] = x[i]
        del x
    return result, floats


def run_request(req: SampleRequest, log: Callable[[str], None] = lambda s: None,
                on_step: Callable[[int, int], None] | None = None) -> SampleResult:
    """`sample_bundle` for a prepared request; the order of work is the module docstring's (refuse early, plan
    before any model file is read, checksum what will be parsed, snippets before the session)."""
    t_start = time.perf_counter()
    rss.set_mmap_threshold(MMAP_THRESHOLD)  # first: every later allocation behaves as in the profiling process
    _check_request(req)
    bundle, manifest, schedule = _read_bundle(req)
    guidance = resolve_guidance(req.guidance, manifest.lut is not None,
                                default=manifest.sampling.get("guidance", 1.0))
    profile = load_profile(bundle, manifest, log)
    warm_up()
    plan = _plan(req, manifest, profile, guidance)
    log(plan.describe())  # before the work: what it will do (the progress bar then gives the time left)
    log(f"sampling {req.n} image(s) × {req.steps} DDIM steps, seed {req.seed}")
    roles = (ROLE[plan.variant],) + (("lut_codes", "lut_codebooks") if manifest.lut is not None else ())
    open_bundle(bundle, roles=roles)  # sha256 of exactly what will be parsed, before parsing it
    conds = choose_snippets(bundle, manifest, req.n, req.seed, req.snippet, req.interpolate)
    eps_fn = _open_denoiser(bundle, manifest, plan)
    result, floats = _sample_passes(req, manifest, schedule, plan, eps_fn, conds, guidance, on_step)
    paths = write_images(result, req.out, req.out_dir, seed=req.seed)
    return SampleResult(images=result, plan=plan, peak_mb=round(rss.peak_mb(), 1),
                        wall_s=round(time.perf_counter() - t_start, 2), paths=paths, floats=floats)


def sample_bundle(
    bundle_dir: str | Path | None = None,
    *,
    n: int = 16,
    steps: int = 25,
    seed: int = 0,
    memory_budget: int | None = None,
    snippet: int | None = None,
    interpolate: str | None = None,
    precision: str = "auto",
    threads: int | None = None,
    cells_per_call: int | None = None,
    images_per_pass: int | None = None,
    cap: bool = True,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    keep_float: bool = False,
    mode: str | None = None,
    guidance: float | None = None,
    log: Callable[[str], None] = lambda s: None,
    on_step: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Sample `n` images from a bundle within `memory_budget` bytes of process peak RSS (None: half of what the
    machine has available). `guidance` None takes the bundle's recommended scale (manifest.sampling), else 1.
    Raises `EdgediffError` (a `BudgetError` for a budget no plan can meet). The keyword API callers use; the
    arguments become one `SampleRequest` (see `run_request`)."""
    req = SampleRequest(bundle_dir=bundle_dir, n=n, steps=steps, seed=seed, memory_budget=memory_budget,
                        snippet=snippet, interpolate=interpolate, precision=precision, threads=threads,
                        cells_per_call=cells_per_call, images_per_pass=images_per_pass, cap=cap, out=out,
                        out_dir=out_dir, keep_float=keep_float, mode=mode, guidance=guidance)
    return run_request(req, log=log, on_step=on_step)


def image_name(seed: int, index: int) -> str:
    """The file of image `index` of a run with `seed`: enough to regenerate exactly that image."""
    return f"seed{seed}_{index:04d}.png"


def write_images(images_u8: np.ndarray, out: str | Path | None, out_dir: str | Path | None,
                 seed: int = 0) -> list[Path]:
    """The grid at `out` (format from its extension) and, with `out_dir`, every image as its own PNG named by
    `image_name`; each file atomic. Only `out_dir` itself may be created; Ctrl-C says how far it got."""
    paths: list[Path] = []
    total = (out is not None) + (len(images_u8) if out_dir is not None else 0)
    try:
        if out is not None:
            paths.append(imgio.save_image(imgio.make_grid(images_u8), out))
        if out_dir is not None:
            try:
                Path(out_dir).mkdir(exist_ok=True)
            except OSError as e:
                raise EdgediffError(f"cannot write --out-dir {out_dir}: {e.strerror or e}; choose a writable "
                                    "folder") from None
            for i, im in enumerate(images_u8):
                paths.append(imgio.save_image(im, Path(out_dir) / image_name(seed, i)))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while writing images: {len(paths)} of {total} files written, each complete"
                          ) from None
    return paths
