"""The `edgediff` command line: parse, call one library function, print. No logic of its own.

Every command maps to a plain function that tests call directly; `EdgediffError` becomes one line on stderr and
exit code 2 (the traceback only with --debug). Training-side imports happen inside the commands so that the
device install (no torch) can still run `sample` and `info`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgediff.errors import TRAIN_INSTALL, EdgediffError, Interrupted
from edgediff.model_config import ModelConfig  # torch-free: the widths' defaults live there
from edgediff.units import MIB

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Patch diffusion for small devices.")


def _version(value: bool) -> None:
    if value:
        from edgediff import __version__

        typer.echo(f"edgediff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Declared so that typer accepts --debug; `main` reads it from argv, since errors are raised before this runs."""


TRAINING_MODULES = ("torch", "safetensors", "onnx", "scipy", "tqdm")  # what train/export/eval/audit import


def _require_training_extras(command: str) -> None:
    """The device install has no torch: say so in one line instead of a traceback from deep inside an import."""
    import importlib.util

    missing = [m for m in TRAINING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgediffError(f"'edgediff {command}' needs the training extras ({', '.join(missing)} not installed); "
                            f"install them {TRAIN_INSTALL}")


def _on_interrupt(message: str):
    """Run the command body; Ctrl-C becomes `Interrupted(message)` unless the body already said what it kept."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(message) from None

    return guard()


def _report_training(result: dict, out: Path) -> None:
    """One line on what `edgediff train` did: where the checkpoint and previews are, or why nothing was trained."""
    from edgediff.progress import rate_text

    if not result.get("main_process", True):
        return
    if result["trained"] == 0:
        typer.echo(f"{out} is already at step {result['steps']} (= --steps): nothing to train; raise --steps to "
                   "continue")
        return
    typer.echo(
        f"trained to step {result['steps']} ({result['trained']} steps this time, {result['params']:,} parameters, "
        f"{rate_text(result['steps_per_s'])}); checkpoint in {out}/checkpoints"
        + (f", samples in {result['last_preview']}" if result.get("last_preview") else "")
    )


@app.command()
def train(
    data: str = typer.Option("emoji", help="'emoji' (built in) or a folder of PNG/JPEG/WebP images."),
    image_size: Optional[int] = typer.Option(None, help="Training resolution in pixels (square) [default: the preset's, else 32]."),
    grid: Optional[int] = typer.Option(None, help="Cells per side: grid×grid patches; 1 = full-image baseline [default: the preset's, else 2]."),
    halo: Optional[int] = typer.Option(None, help="Pixels of the neighbouring cells each cell sees [default: the preset's, else 4 with cells (what every shipped model uses; 0 shows the grid as seams) and 0 at grid 1]."),
    init_from: Optional[Path] = typer.Option(None, help="Start from the weights of a shipped model (e.g. "
                                                        "emoji-32), bundle or run of the same widths (a halo model may "
                                                        "start from a halo-0 one)."),
    backbone: Optional[str] = typer.Option(None, help="unet, dis (state-space) or dit (attention) [default: the preset's, else unet]."),
    steps: int = typer.Option(1000, help="Total optimisation steps (with --resume: the new total)."),
    batch_size: int = typer.Option(64, help="Examples per step, summed over all processes."),
    out: Path = typer.Option(Path("runs/default"), help="Run directory for checkpoints, samples and logs."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Train without the memory bank (null snippet)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint, with the run's own settings (any other value is refused)."),
    override: Optional[list[str]] = typer.Option(None, "--override", help="With --resume: let this optimisation setting (e.g. lr, batch-size, ema-decay) take its new value from the current step on; recorded in run.json and the bundle. Repeat for several."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", help="Forward-pass arithmetic: auto (bf16 autocast on CUDA, float32 on a CPU), bf16 (also on a CPU: 1.6-1.8x faster where it has AVX512-BF16 or AMX) or fp32."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate."),
    seed: int = typer.Option(0, min=0, help="Seed: fixes data order, noise and initialisation."),
    preset: Optional[str] = typer.Option(None, help="A named model size to start from: unet-s, unet-m (the default bundle's), unet-l, dis-s or dit-s; or a recipe that also sets the geometry: emoji-128. Explicit flags win."),
    dim: Optional[int] = typer.Option(None, help=f"Base channel width of the network [default: the preset's, else {ModelConfig.dim}]."),
    mults: Optional[str] = typer.Option(None, help=f"UNet width multipliers per level, comma separated [default: the preset's, else {','.join(map(str, ModelConfig.mults))}]."),
    depth: Optional[int] = typer.Option(None, min=1, help=f"Blocks of the DiS / DiT backbones [default: the preset's, else {ModelConfig.depth}]."),
    position_map: Optional[bool] = typer.Option(None, "--position-map/--no-position-map", help="UNet: also draw the cell's position as a channel on the global content, so each cell can find its own place in the layout [default: the preset's, else off]."),
    schedule_shift: Optional[float] = typer.Option(None, "--schedule-shift", help="Divide the noise schedule's signal-to-noise ratio by this squared, so training spends its steps where a large image's layout is still undecided (simple diffusion; SD3's shift): the image side ÷ 32, e.g. 4 at 128 px [default: the preset's, else 1]."),
    snippet_dropout: float = typer.Option(0.2, help="Probability of training on the null snippet."),
    snippet_mode: str = typer.Option("pca", help="pca: PCA-reduced snippets (default); gmem: GMem's full normalised feature with element-wise dropout."),
    snippet_element_dropout: float = typer.Option(0.4, help="Element-wise snippet dropout of --snippet-mode gmem."),
    align: float = typer.Option(0.0, help="Weight of the representation-alignment loss (0: off; GMem uses 0.5)."),
    align_until: int = typer.Option(0, help="Step after which --align turns off (0: never)."),
    features: Optional[Path] = typer.Option(None, help="Your own .npy features (one row per image) for the bank."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    sample_every: int = typer.Option(500, help="Steps between preview grids in RUN_DIR/samples (0: no previews)."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the weights that get exported."),
) -> None:
    """Train a patch denoiser (torch; CUDA when present; several GPUs through torchrun)."""
    _require_training_extras("train")
    from edgediff.model_config import geometry_choice, model_choice
    from edgediff.train import TrainConfig, train as run_train

    backbone, widths = model_choice(preset, backbone, dim, mults, depth, position_map, schedule_shift)
    image_size, grid, halo = geometry_choice(preset, image_size, grid, halo)
    cfg = TrainConfig(
        data=data, out=str(out), image_size=image_size, grid=grid, halo=halo, backbone=backbone, steps=steps,
        init_from=str(init_from) if init_from else None,
        batch_size=batch_size, lr=lr, seed=seed, memory=not no_memory, snippet_dropout=snippet_dropout,
        features=str(features) if features else None, sample_every=sample_every,
        checkpoint_every=checkpoint_every, device=device, precision=precision, ema_decay=ema_decay,
        snippet_mode=snippet_mode,
        snippet_element_dropout=snippet_element_dropout, align=align, align_until=align_until,
        model=widths,
    )
    try:
        result = run_train(cfg, resume=resume, log=typer.echo, overrides=tuple(override or ()))
    except KeyboardInterrupt:
        from edgediff.resume import interrupted_message

        raise Interrupted(interrupted_message(out)) from None
    _report_training(result, out)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'edgediff train', or a bundle (rebuilt from its fp32 ONNX: add --int8 / --ort)."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write: a new or empty folder, or a bundle with --overwrite."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the bundle already at --out (atomically: it stays whole until the new one is complete)."),
    int8: bool = typer.Option(False, "--int8", help="Also ship a static QDQ int8 denoiser (calibrated on the data)."),
    lut_bytes: int = typer.Option(8, "--lut-bytes", help="Bytes per memory-bank entry in the PQ lookup table."),
    profile: bool = typer.Option(True, "--profile/--no-profile", help="Measure the memory profile (fresh processes)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Record this memory-bank guidance scale as the bundle's sampling default."),
    ort: bool = typer.Option(False, "--ort", help="Ship the denoisers in ORT format (.ort): less resident memory after loading but a higher peak while loading (README: Export); what onnxruntime's mobile packages load."),
    int8_recipe: str = typer.Option("diffusion", "--int8-recipe", help="How to make the int8 denoiser: diffusion (static int8 convs, skip concats split, first/last conv fp32, percentile ranges, the most sensitive 30% of convs fp32), static (every op, min/max) or weight-only."),
    int8_images: int = typer.Option(256, "--int8-images", min=8, help="Images sampled through fp32 and int8 from the same noise to measure what int8 changes (PSNR, FD in both metrics): the evidence of the int8 ship gate."),
    int8_only: bool = typer.Option(False, "--int8-only", help="Ship the int8 denoiser alone (implies --int8): refused unless it passes the int8 quality gate against fp32, which export measures first. The smallest bundle; with --int8-recipe weight-only also a peak below fp32's."),
    fp16_weights: bool = typer.Option(False, "--fp16-weights", help="Store the fp32 denoiser's weights as fp16: half the file, the same fp32 computation (checked on real inputs; what the shipped emoji-128 uses)."),
    base: Optional[str] = typer.Option(None, "--base", help="Record a cascade: 'sample' first draws with this shipped model (e.g. emoji-32) and this bundle redraws its images ('none' removes a recorded one); needs --strength."),
    strength: Optional[float] = typer.Option(None, "--strength", help="With --base: the share of the steps that redraws the base's images (0 < S < 1)."),
    cell_shift: Optional[int] = typer.Option(None, "--cell-shift", help="Record shifted cells as the bundle's sampling default: the grid moves by a random offset of up to this many pixels each way at every step (at most half a cell; 0 removes a recorded one)."),
    eta: Optional[float] = typer.Option(None, "--eta", help="Record the DDIM η sampling uses by default: 0 deterministic (what no record means), 1 fresh noise at every step."),
) -> None:
    """Export a run's EMA model to a verified bundle: ONNX (fp32, optional int8), bank LUT, manifest."""
    _require_training_extras("export")
    from edgediff_export import ExportOptions, export_run

    options = ExportOptions(int8=int8 or int8_only, int8_only=int8_only, lut_bytes=lut_bytes, profile=profile,
                            guidance=guidance, int8_recipe=int8_recipe, ort_format=ort, int8_images=int8_images,
                            overwrite=overwrite, base=base, strength=strength, fp16_weights=fp16_weights,
                            cell_shift=cell_shift, eta=eta)
    with _on_interrupt(f"interrupted: no bundle written ({out} is as it was)"):
        result = export_run(run_dir, out, options, log=typer.echo)
    typer.echo(result.summary(run_dir))


@app.command()
def sample(
    bundle_dir: Optional[Path] = typer.Argument(None, help="A bundle folder, or a shipped model's name ('edgediff info' lists them); left out: emoji-32, the default."),
    n: int = typer.Option(16, "--n", help="Number of images."),
    steps: int = typer.Option(25, help="DDIM steps."),
    seed: str = typer.Option("0", help="Seed (an integer >= 0, or 'random': a fresh one, printed): the same seed gives the same images whatever the plan."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", help="Peak RSS of the whole process, e.g. 96MiB, 96MB, 100000000 (default: what the process holds at start plus half the available memory; the plan line prints the figure)."),
    snippet: Optional[int] = typer.Option(None, "--snippet", help="Condition every image on memory-bank entry INDEX."),
    interpolate: Optional[str] = typer.Option(None, "--interpolate", help="I,J,ALPHA: slerp between bank entries I and J."),
    out: Path = typer.Option(Path("samples.png"), "--out", help="Grid image to write: .png, .jpg/.jpeg or .webp (format from the extension; the folder must exist)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Also write each image as its own PNG here, named seed<SEED>_<INDEX>.png (only this folder may be new)."),
    precision: str = typer.Option("auto", help="auto (int8 when the bundle's int8 passed its quality gate and fits, else fp32 when it fits, else int8), fp32 or int8."),
    threads: Optional[int] = typer.Option(None, min=1, help="onnxruntime threads (default: the cores this process may use)."),
    cells_per_call: Optional[int] = typer.Option(None, "--cells-per-call", help="Pin the cells per denoiser call instead of planning it."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Memory-bank guidance scale (1 = none; default: the bundle's recommendation)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print the plan's tuning knobs: session mode, onnxruntime arena cap, the leanest plan's peak."),
    init: Optional[Path] = typer.Option(None, "--init", help="Redraw this picture (PNG, JPEG, WebP; fitted to the bundle's size) instead of drawing from noise; needs --strength."),
    base: Optional[str] = typer.Option(None, "--base", help="Cascade: draw the start images with this shipped model or bundle, then redraw them at this bundle's size ('none': draw from noise) [default: the bundle's recommendation, e.g. emoji-32 for emoji-128]."),
    strength: Optional[float] = typer.Option(None, "--strength", help="With --init or a base: the share of the steps that redraws the start images (0.5 keeps their layout, 1 ignores them) [default: the bundle's recommendation]."),
    cell_shift: Optional[int] = typer.Option(None, "--cell-shift", help="Move the cell grid by a seeded random offset of up to this many pixels each way at every step, so no border stays put (0 = a fixed grid, at most half a cell) [default: the bundle's recommendation, else 0]."),
    eta: Optional[float] = typer.Option(None, "--eta", help="DDIM η: 0 deterministic, 1 fresh seeded noise at every step (ancestral), which cleans up a small model's shapes [default: the bundle's recommendation, else 0]."),
) -> None:
    """Sample images on device (numpy + onnxruntime only), planned to stay under --memory-budget."""
    import time

    from edgediff.runtime import rss
    from edgediff.runtime.cascade import choose_start
    from edgediff.runtime.sample_files import sample_to_files
    from edgediff.runtime.sampler import SampleRequest
    from edgediff.units import parse_size

    t0 = time.perf_counter()
    budget = parse_size(memory_budget) if memory_budget is not None else None
    seed_value = _parse_seed(seed)
    if seed.strip().lower() == "random":
        typer.echo(f"seed {seed_value} (--seed random; pass --seed {seed_value} to repeat these images)")
    request = SampleRequest(n=n, steps=steps, seed=seed_value, memory_budget=budget, snippet=snippet,
                            interpolate=interpolate, precision=precision, threads=threads,
                            cells_per_call=cells_per_call, guidance=guidance, cell_shift=cell_shift, eta=eta)
    start = choose_start(bundle_dir, init, base, strength)
    result = sample_to_files(bundle_dir, request, out, out_dir, log=typer.echo, verbose=verbose, start=start)
    peak = max(result.peak_mb, rss.peak_mb())  # writing the files is part of the run the budget is about
    budget_note = f" (budget {budget / MIB:.1f} MiB)" if budget is not None else ""
    typer.echo(f"peak RSS {peak:.1f} MiB{budget_note}, wall time {time.perf_counter() - t0:.2f} s")
    typer.echo(f"wrote {out}" + (f" and {n} images in {out_dir}" if out_dir is not None else ""))


def _parse_seed(text: str) -> int:
    """An integer >= 0, or 'random': a fresh seed from the OS (printed, so the images can be made again)."""
    if text.strip().lower() == "random":
        import secrets

        return secrets.randbelow(2**31)
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise EdgediffError(f"--seed {text} must be an integer >= 0 or 'random'")
    return value


@app.command()
def info(bundle_dir: Optional[Path] = typer.Argument(None, help="A bundle folder written by 'edgediff export', or a shipped model's name; left out: the default, and the list of shipped models.")) -> None:
    """Check a bundle (schema, paths, sizes, sha256) and print its manifest readably."""
    from edgediff.bundle_info import bundle_info

    typer.echo(bundle_info(bundle_dir))


@app.command("eval")
def eval_(
    run_dir: Optional[Path] = typer.Argument(None, help="A RUN_DIR from 'edgediff train' (torch), a BUNDLE_DIR (device runtime) or a shipped model's name; left out: the default bundle shipped inside edgediff."),
    data: Optional[str] = typer.Option(None, help="The real images to compare with: 'emoji' or a folder (default: the data the run or bundle records it was trained on)."),
    other_data: bool = typer.Option(False, "--other-data", help="Allow a --data other than the recorded training data."),
    n: int = typer.Option(1000, "--n", help="Number of generated images (FD-Lite0 is biased upward for small n)."),
    steps: int = typer.Option(25, help="DDIM steps of the torch sampler."),
    seed: int = typer.Option(0, min=0, help="Seed of the initial noise and of the random bank entries."),
    snippet: Optional[int] = typer.Option(None, "--snippet", help="Condition every image on memory-bank entry INDEX."),
    interpolate: Optional[str] = typer.Option(None, "--interpolate", help="I,J,ALPHA: slerp between bank entries I and J."),
    like: Optional[Path] = typer.Option(None, "--like", help="Condition on the snippet of this image (encoded with the run's encoder and PCA)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write a grid PNG of the first 64 generated images."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON here."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Memory-bank guidance scale (default: a bundle's recommendation; 1 for a run)."),
    precision: str = typer.Option("auto", help="A bundle's denoiser: auto (what `sample` would run), fp32 or int8."),
    eta: Optional[float] = typer.Option(None, "--eta", help="DDIM η: 0 deterministic, 1 fresh noise at every step (default: a bundle's recommendation; 0 for a run)."),
) -> None:
    """Quality of a run or bundle: FD and KID against real images in Lite0 space (the bank's) and in an independent
    network's, and the seam ratio (1.0 = invisible)."""
    _require_training_extras("eval")
    from edgediff.evaluate import eval_command, format_scores

    with _on_interrupt("interrupted: no scores or files written"):
        result = eval_command(run_dir, data=data, n=n, steps=steps, seed=seed, snippet=snippet,
                              interpolate=interpolate, like=like, save=save, json_out=json_out, guidance=guidance,
                              other_data=other_data, precision=precision, eta=eta, log=typer.echo)
    typer.echo(format_scores(result))
    for path in (save, json_out):
        if path is not None:
            typer.echo(f"wrote {path}")


@app.command()
def audit(
    target: Optional[Path] = typer.Argument(None, help="A RUN_DIR (torch EMA model) or BUNDLE_DIR (device runtime) to sample from; left out (and no --samples): the default bundle shipped inside edgediff."),
    data: Optional[str] = typer.Option(None, help="The training images: 'emoji' or a folder (default: the data the run or bundle records; required with --samples)."),
    other_data: bool = typer.Option(False, "--other-data", help="Allow a --data other than the recorded training data."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier audit in the output folder."),
    n: int = typer.Option(1000, "--n", help="Number of samples to generate (with --samples: at most this many are read)."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="Audit this folder of generated images instead of generating."),
    steps: int = typer.Option(25, help="DDIM steps when generating."),
    seed: int = typer.Option(0, min=0, help="Seed of the initial noise and of the random bank entries."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for worst.png, samples.png and audit.json (default: RUN_DIR/audit or <name>_audit beside it)."),
    sigma: Optional[float] = typer.Option(None, help="σ of the associative-memory energy, in [-1, 1] pixel units (default: a third of the 10th-percentile gap between training images)."),
    flips: bool = typer.Option(True, "--flips/--no-flips", help="Count a training image and its mirror as one image (training mirrors at random)."),
    worst: int = typer.Option(16, help="Rows in the worst-case sheet (most memorised samples)."),
    features: bool = typer.Option(True, "--features/--no-features", help="Also measure in FD-Lite0 feature space (needs the encoder)."),
) -> None:
    """Memorisation audit: nearest/second-nearest ratio (pixels and FD-Lite0), worst cases, energy and basin weight."""
    _require_training_extras("audit")
    from edgediff.audit import audit as run_audit, format_summary

    with _on_interrupt("interrupted: no audit written"):
        result = run_audit(target, data=data, n=n, steps=steps, seed=seed, samples=samples, out=out, sigma=sigma,
                           flips=flips, worst=worst, features=features, other_data=other_data, overwrite=overwrite,
                           log=typer.echo)
    typer.echo(format_summary(result))


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and a non-zero exit."""
    debug = "--debug" in sys.argv
    try:
        code = app(standalone_mode=False)
    except Interrupted as e:  # Ctrl-C inside a command: it says what it kept
        typer.echo(str(e), err=True)
        sys.exit(130)
    except EdgediffError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted before any work began: nothing written", err=True)
        sys.exit(130)
    except Exception as e:  # usage errors: typer >= 0.29 vendors click, so `click.*` types no longer match them
        if type(e).__name__ == "NoArgsIsHelpError" and hasattr(e, "show"):
            e.show()
            sys.exit(getattr(e, "exit_code", 2))
        if isinstance(e, typer.TyperException) and hasattr(e, "format_message"):  # one line, like every error
            where = getattr(getattr(e, "param", None), "opts", None)
            msg = " ".join(e.format_message().split())
            if where and where[0] not in msg:
                msg = f"{where[0]}: {msg}"
            typer.echo(f"error: {msg} (see --help)", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        if isinstance(e, typer.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, typer.Abort):
            sys.exit(1)
        raise
    if code == 130:  # typer turns a KeyboardInterrupt outside any command body (start-up, parsing) into 130
        typer.echo("interrupted before any work began: nothing written", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
