"""`edgediff eval`, and what it shares with `edgediff audit`: generating images from a source. Which source a path
is lives in edgediff.sources; the scores themselves are edgediff.metrics' (metrics only; no command lives there).

A source is a training run (its EMA model through the torch sampler) or a bundle (the device runtime: what users
actually ship).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.sources import BUNDLE, RUN, Source, resolve_data, resolve_source

if TYPE_CHECKING:
    from edgediff.runtime.sampler import SampleResult

def generate_from_run(
    run_dir: str | Path, n: int, steps: int = 25, seed: int = 0, snippets: np.ndarray | None = None,
    batch: int = 250, progress: bool = False, guidance: float = 1.0, eta: float = 0.0,
) -> tuple[np.ndarray, object]:
    """uint8 samples [n, H, W, 3] from a run's EMA model (torch sampler), snippets drawn at random from its bank
    unless given; returns (images, ModelConfig). Batches of `batch` images keep memory flat for large n."""
    from edgediff.checkpoint import load_ema_model
    from edgediff.images import to_uint8
    from edgediff.memory_bank import run_snippets
    from edgediff.progress import Progress
    from edgediff.torch_sampler import sample_torch

    if n < 1:  # eval asks for 2 (FD and KID need them) before calling; audit works from one image
        raise EdgediffError(f"--n {n} must be at least 1")
    if steps < 1:
        raise EdgediffError(f"--steps {steps} must be >= 1")
    model, config, _ = load_ema_model(Path(run_dir))
    if snippets is None:
        snippets = run_snippets(run_dir, n, seed=seed)
    out = []
    with Progress("sampling", n * steps, unit="image-steps", enabled=progress) as bar:
        for k, s in enumerate(range(0, n, batch)):
            m = min(batch, n - s)
            sn = None if snippets is None else snippets[s : s + m]
            out.append(to_uint8(sample_torch(model, config, n=m, steps=steps, seed=seed + 1000 * k, snippets=sn,
                                             guidance=guidance, eta=eta,
                                             on_step=lambda i, s=s, m=m: bar.update(s * steps + (i + 1) * m))))
    return np.concatenate(out), config


def generate_from_bundle(bundle_dir: Path, n: int, steps: int, seed: int, *, snippet: int | None = None,
                         interpolate: str | None = None, guidance: float | None = None, precision: str = "auto",
                         eta: float | None = None, log: Callable[[str], None] = lambda s: None) -> SampleResult:
    """Samples from a bundle through the device runtime as `sample` would (its recorded cascade included), with a
    progress bar (the images are in `.images`)."""
    from edgediff.progress import Progress
    from edgediff.runtime.cascade import choose_start, start_sampler
    from edgediff.runtime.sampler import SampleRequest

    request = SampleRequest(n=n, steps=steps, seed=seed, snippet=snippet, interpolate=interpolate, guidance=guidance,
                            precision=precision, eta=eta)
    _, run = start_sampler(bundle_dir, request, choose_start(bundle_dir), log=log)
    with Progress("sampling", n * steps) as bar:
        return run(on_step=bar.step_callback())


def eval_command(
    run_dir: str | Path | None, data: str | None = None, n: int = 1000, steps: int = 25, seed: int = 0,
    snippet: int | None = None, interpolate: str | None = None, like: str | Path | None = None,
    save: str | Path | None = None, json_out: str | Path | None = None, guidance: float | None = None,
    other_data: bool = False, precision: str = "auto", eta: float | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """What `edgediff eval` does: pick the snippets (random bank entries unless told), sample, score, write files.
    `run_dir` None: the default bundle. `data` None: the data the run or bundle records it was trained on (see
    `resolve_data`)."""
    source = resolve_source(run_dir)
    data = resolve_data(source, data, other_data)
    if source.kind == BUNDLE and like is not None:
        raise EdgediffError("--like needs the run's encoder; pass the RUN_DIR instead of a bundle")
    if source.kind != BUNDLE and precision != "auto":
        raise EdgediffError("--precision picks a bundle's denoiser; a run samples with its torch model (drop "
                            "--precision or pass a BUNDLE_DIR)")
    if n < 2:
        raise EdgediffError(f"--n {n} must be at least 2 for FD-Lite0 and KID")
    kw = dict(data=data, n=n, steps=steps, seed=seed, snippet=snippet, interpolate=interpolate, like=like, save=save,
              guidance=guidance, eta=eta, log=log)
    if source.kind == BUNDLE:
        result = _eval_bundle(source.path, precision=precision, **kw)
    else:
        result = _eval_run(source.path, **kw)
    if json_out is not None:
        from edgediff.files import atomic_write_bytes

        atomic_write_bytes(json_out, json.dumps(result, indent=1).encode())
    return result


def _open_scoring(data: str, image_size: int, save, log: Callable[[str], None]):
    """The real images to score against, loaded (and --save checked) before minutes of sampling can be wasted."""
    from edgediff.data import load_dataset
    from edgediff.images import check_output_file

    dataset = load_dataset(data, image_size)
    if save is not None:
        check_output_file(save, "--save")
    log(f"scoring against {data} ({len(dataset)} images)")
    return dataset


def _save_grid(images: np.ndarray, save) -> None:
    if save is not None:
        from edgediff.images import make_grid, save_image

        save_image(make_grid(images[:64]), save, scale=2)


def _eval_run(run_dir: Path, data: str, n: int, steps: int, seed: int, snippet: int | None, interpolate: str | None,
              like, save, guidance: float | None, eta: float | None, log: Callable[[str], None]) -> dict:
    """`edgediff eval RUN_DIR`: sample with the run's EMA model (torch) and score it."""
    from edgediff.memory_bank import run_snippets
    from edgediff.metrics import evaluate
    from edgediff.sampling import resolve_eta, resolve_guidance

    image_size = Source(RUN, run_dir).image_size()  # from the checkpoint's metadata: the model loads once, below
    dataset = _open_scoring(data, image_size, save, log)  # a bad --data fails before sampling for minutes
    sn = run_snippets(run_dir, n, seed=seed, snippet=snippet, interpolate=interpolate, like=like,
                      image_size=image_size)
    g = resolve_guidance(guidance, has_bank=sn is not None)
    e = resolve_eta(eta)
    images, config = generate_from_run(run_dir, n, steps=steps, seed=seed, snippets=sn, progress=True, guidance=g,
                                       eta=e)
    result = evaluate(images, dataset, config.grid)
    choice = ("snippet", snippet) if snippet is not None else ("interpolate", interpolate) if interpolate else (
        ("like", str(like)) if like is not None else ("random", None))
    result.update(run_dir=str(run_dir), data=data, sampler_steps=int(steps), seed=int(seed),
                  snippet_choice=choice[0], snippet_arg=choice[1], memory=sn is not None, guidance=g, eta=e)
    _save_grid(images, save)
    return result


def _eval_bundle(bundle_dir: Path, data: str, n: int, steps: int, seed: int, snippet: int | None,
                 interpolate: str | None, like, save, guidance: float | None, eta: float | None,
                 log: Callable[[str], None], precision: str = "auto") -> dict:
    """`edgediff eval BUNDLE_DIR`: sample with the device runtime (what users actually ship) and score it (`like`
    was refused already: a bundle has no encoder)."""
    from edgediff.bundle import read_manifest
    from edgediff.metrics import evaluate
    from edgediff.sampling import bundle_eta

    manifest = read_manifest(bundle_dir)
    dataset = _open_scoring(data, manifest.image_size, save, log)
    e = bundle_eta(eta, manifest.sampling)
    run = generate_from_bundle(bundle_dir, n, steps, seed, snippet=snippet, interpolate=interpolate,
                               guidance=guidance, precision=precision, eta=e, log=log)
    result = evaluate(run.images, dataset, manifest.grid)
    result.update(bundle_dir=str(bundle_dir), data=data, sampler_steps=int(steps), seed=int(seed),
                  snippet_choice="snippet" if snippet is not None else "interpolate" if interpolate else "random",
                  memory=manifest.lut is not None, guidance=run.plan.guidance, precision=run.plan.variant, eta=e)
    _save_grid(run.images, save)
    return result


def format_scores(result: dict) -> str:
    """The one line `edgediff eval` prints: both metrics, the seam ratios against real images', and what was
    compared with what (as audit.format_summary does for the audit)."""
    from edgediff.encoders_independent import LABEL

    r = result
    return (
        f"FD-Lite0 {r['fd_lite0']:.2f}  KID {r['kid']:.4f} ± {r['kid_std']:.4f}  |  "
        f"FD-{LABEL} {r['fd_independent']:.2f}  KID {r['kid_independent']:.4f} ± {r['kid_independent_std']:.4f} "
        f"(independent)  seam ratio {r['seam_border']:.3f} at cell borders, {r['seam_midcell']:.3f} mid-cell "
        f"(real images: {r['seam_border_real']:.3f}, {r['seam_midcell_real']:.3f})  [{r['n_generated']} generated vs "
        f"{r['n_real']} real of {r['data']}, {r['sampler_steps']} DDIM steps, guidance {r['guidance']:g}"
        + (f", eta {r['eta']:g}" if r.get("eta") else "")
        + (f", {r['precision']}" if "precision" in r else "") + "]"
    )
