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

from edgediff.errors import EdgediffError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Patch diffusion for small devices.")
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


@app.command()
def train(
    data: str = typer.Option("emoji", help="'emoji' (built in) or a folder of PNG/JPEG/WebP images."),
    image_size: int = typer.Option(32, help="Training resolution in pixels (square)."),
    grid: int = typer.Option(2, help="Cells per side: grid×grid patches; 1 = full-image baseline."),
    backbone: str = typer.Option("unet", help="unet, dis (state-space) or dit (attention)."),
    steps: int = typer.Option(1000, help="Total optimisation steps (with --resume: the new total)."),
    batch_size: int = typer.Option(64, help="Examples per step, summed over all processes."),
    out: Path = typer.Option(Path("runs/default"), help="Run directory for checkpoints, samples and logs."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Train without the memory bank (null snippet)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate."),
    seed: int = typer.Option(0, help="Seed: fixes data order, noise and initialisation."),
    dim: int = typer.Option(64, help="Base channel width of the network."),
    mults: str = typer.Option("1,2,2", help="UNet width multipliers per level, comma separated."),
    depth: int = typer.Option(6, help="Blocks of the DiS / DiT backbones."),
    snippet_dropout: float = typer.Option(0.2, help="Probability of training on the null snippet."),
    features: Optional[Path] = typer.Option(None, help="Your own .npy features (one row per image) for the bank."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    sample_every: int = typer.Option(500, help="Steps between preview grids (0: only at the end... and never if 0)."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the weights that get exported."),
) -> None:
    """Train a patch denoiser (torch; CUDA when present; several GPUs through torchrun)."""
    from edgediff.train import TrainConfig, train as run_train

    try:
        mult_tuple = [int(m) for m in mults.split(",") if m.strip()]
    except ValueError:
        raise EdgediffError(f"--mults {mults!r} must be comma-separated integers, e.g. 1,2,2") from None
    if dim < 1 or not mult_tuple or min(mult_tuple) < 1:
        raise EdgediffError("--dim and --mults must be positive integers")
    cfg = TrainConfig(
        data=data, out=str(out), image_size=image_size, grid=grid, backbone=backbone, steps=steps,
        batch_size=batch_size, lr=lr, seed=seed, memory=not no_memory, snippet_dropout=snippet_dropout,
        features=str(features) if features else None, sample_every=sample_every,
        checkpoint_every=checkpoint_every, device=device, ema_decay=ema_decay,
        model={"dim": dim, "mults": mult_tuple, "depth": depth},
    )
    result = run_train(cfg, resume=resume)
    if result.get("steps") is not None:
        typer.echo(
            f"trained {result['steps']} steps ({result['params']:,} parameters, {result['steps_per_s']:.2f} steps/s); "
            f"checkpoint in {out}/checkpoints"
            + (f", samples in {result['last_preview']}" if result.get("last_preview") else "")
        )


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and a non-zero exit."""
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except EdgediffError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
