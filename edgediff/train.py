"""The training loop, shaped like nanoGPT's: set up, restore, then `train_step(run, step)` on
`batches.get_batch(step)` until cfg.steps, with checkpoints and previews in between.

Where the rest lives: the batches (one random cell of one image at a random t per example, a pure function of
seed, step and rank, so a resumed run replays exactly the batches an uninterrupted one would have seen) in
edgediff.batches; the denoiser's inputs in edgediff.cells (numpy) and edgediff.models.cells (its torch twin); the
torchrun/DDP context in edgediff.distributed; previews in edgediff.preview; checkpoints in edgediff.checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from edgediff.batches import TrainBatches
from edgediff.checkpoint import latest_checkpoint, restore, save_checkpoint
from edgediff.data import Dataset, data_spec, load_dataset
from edgediff.distributed import Distributed, pick_device
from edgediff.errors import EdgediffError
from edgediff.files import atomic_write_bytes
from edgediff.memory_bank import Snippets
from edgediff.models import ModelConfig, build_model, count_params
from edgediff.precision import autocast, autocast_dtype, bf16_hint, describe
from edgediff.preview import draw_preview
from edgediff.progress import Progress
from edgediff.resume import ResumePoint, check_resume, check_same_images
from edgediff.train_config import TrainConfig  # re-exported: `from edgediff.train import TrainConfig` keeps working


def load_snippets(cfg: TrainConfig, dataset: Dataset) -> Snippets:
    """The memory bank for this dataset (built or reused from cache), or the null snippet with --no-memory."""
    if not cfg.memory:
        return Snippets(dim=int(cfg.model.get("snippet_dim", 64)))
    from edgediff.memory_bank import bank_for_training

    return bank_for_training(dataset, cfg)


def _write_run_json(out: Path, cfg: TrainConfig, mcfg: ModelConfig, dataset: Dataset, snippets: Snippets) -> None:
    body = {"train": asdict(cfg), "model": mcfg.to_dict(), "data": {"name": dataset.name, "key": dataset.key,
            "images": len(dataset), "skipped": dataset.skipped, "sha256": dataset.content_sha256()},
            "memory": snippets.info}
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        # compared through ModelConfig so that fields added since (recorded with their old values as defaults)
        # do not make an older run look like a different model
        if not isinstance(old.get("model"), dict) or ModelConfig.from_dict(old["model"]).to_dict() != body["model"]:
            raise EdgediffError(
                f"{out} holds a run with a different model ({old.get('model')}); use a new --out or the same settings"
            )
    atomic_write_bytes(path, json.dumps(body, indent=1).encode())


def _load_run(cfg: TrainConfig, out: Path, dist: Distributed, point: ResumePoint | None,
              log: Callable[[str], None]):
    """Dataset, memory bank and model config of the run; run.json and the bank written by rank 0, and only when
    there is something to train (a no-op resume changes nothing on disk)."""
    dataset = load_dataset(cfg.data, cfg.image_size)
    check_same_images(point, cfg.data, dataset.content_sha256(), len(dataset))
    if dataset.skipped and dist.main:
        log(f"skipped {dataset.skipped} unreadable image file(s) in {cfg.data} ({dataset.skipped_text()}); "
            f"training on {len(dataset)} images")
    if cfg.memory and dist.main:
        log(f"memory bank of {len(dataset)} images and their mirrors (Lite0 features are computed on the first run "
            "with this data, then cached)")
    snippets = load_snippets(cfg, dataset)
    mcfg = cfg.model_config(snippets.dim)
    try:
        mcfg.geometry
    except ValueError as e:
        raise EdgediffError(str(e)) from e
    if dist.main and (point is None or point.step < cfg.steps):
        out.mkdir(parents=True, exist_ok=True)
        _write_run_json(out, cfg, mcfg, dataset, snippets)
        if cfg.memory:
            from edgediff.memory_bank import save_run_bank

            save_run_bank(out, snippets)  # export and eval read the bank from the run, never the encoder
    return dataset, snippets, mcfg


@dataclass
class _Run:
    """The state of one training run, built by `_setup` and `_restore` and advanced by `train_step`: one value to
    pass between the steps of `train` instead of a dozen locals."""

    cfg: TrainConfig
    out: Path
    dist: Distributed
    device: torch.device
    per_rank: int  # examples per step on this process
    dataset: Dataset
    snippets: Snippets
    mcfg: ModelConfig
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    aligner: object | None = None  # edgediff.align.Aligner while --align is on
    extra: dict = field(default_factory=dict)  # trained modules besides the model (checkpointed with it)
    step: int = 0
    losses: list[float] = field(default_factory=list)
    last_preview: Path | None = None
    seconds: float = 0.0  # training wall time up to `step`, summed over resumes (what a training cost is quoted from)
    # set by `_loop` once the run is restored: the batches on the device, the (DDP-wrapped) model and its autocast
    batches: TrainBatches | None = None
    forward: torch.nn.Module | None = None
    autocast: object = None


def _lr(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over warmup_steps, then constant: a pure function of the step, so resume keeps it."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def _check_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    """Stop on a NaN/inf loss before it reaches the weights, naming the checkpoint to resume from."""
    if not torch.isfinite(loss):
        last = latest_checkpoint(out)
        where = f"the last good checkpoint is step {last[1]['step']}" if last else "no checkpoint was written yet"
        raise EdgediffError(f"loss became {loss.item()} at step {step}; {where}: lower --lr and --resume")


def train_step(run: _Run, step: int) -> float:
    """One optimisation step on batch `step`: the denoising loss (plus the representation-alignment term while
    --align is on), AdamW with gradient clipping, then the EMA update. Returns the denoising loss, averaged over
    the processes."""
    cfg = run.cfg
    batch = run.batches.get_batch(step)
    for group in run.opt.param_groups:
        group["lr"] = _lr(cfg, step)
    aligning = run.aligner is not None and (not cfg.align_until or step < cfg.align_until)
    with run.autocast:
        if aligning:  # the early feature map REPA aligns comes back with the noise estimate
            pred, feature = run.forward(*batch.inputs, return_features=True)
        else:
            pred = run.forward(*batch.inputs)
    loss = F.mse_loss(pred.float(), batch.target)
    objective = (loss + cfg.align * run.aligner.loss(feature, batch)) if aligning else loss
    _check_finite(loss, step, run.out)
    run.opt.zero_grad(set_to_none=True)
    objective.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    for m in run.extra.values():
        torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
    run.opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(run.ema.parameters(), run.model.parameters()):
            pe.lerp_(pm, 1 - decay)
    return run.dist.mean(loss.item())


def _setup(cfg: TrainConfig, point: ResumePoint | None, out: Path, dist: Distributed,
           log: Callable[[str], None]) -> _Run:
    """Data, bank, model (seeded; warm-started with --init-from on a fresh run only), EMA copy, the alignment
    head and the optimiser."""
    dataset, snippets, mcfg = _load_run(cfg, out, dist, point, log)
    found = point.checkpoint if point is not None else None
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if cfg.init_from and found is None:
        from edgediff.warmstart import load_init_weights

        copied = load_init_weights(model, cfg.init_from, mcfg)
        if dist.main:
            log(f"initialised {copied} tensors from {cfg.init_from}")
    model = model.to(dist.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    aligner, extra = None, {}
    if cfg.align:
        from edgediff.align import Aligner

        aligner = Aligner(model, dataset, cfg.grid, dist.device)
        extra = {"align": aligner.projector}
    params = list(model.parameters()) + [p for m in extra.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(cfg=cfg, out=out, dist=dist, device=dist.device, per_rank=cfg.batch_size // dist.world,
                dataset=dataset, snippets=snippets, mcfg=mcfg, model=model, ema=ema, opt=opt, aligner=aligner,
                extra=extra)


def _restore(run: _Run, point: ResumePoint | None, log: Callable[[str], None]) -> None:
    """Continue from the checkpoint `check_resume` found: weights, EMA, optimiser, step and the loss history."""
    found = point.checkpoint if point is not None else None
    if found is not None:
        tensor_path, meta = found
        run.step = restore(tensor_path, meta, run.model, run.ema, run.opt, run.extra)
        run.losses = list(meta.get("losses", []))
        run.seconds = float(meta.get("train_seconds", 0.0))
    if point is not None and run.dist.main:
        log(f"resumed from step {run.step}" + (f" ({found[0]})" if found else " (no checkpoint had been written)"))


def _loop(run: _Run, progress: bool, log: Callable[[str], None]) -> float:
    """Optimise until cfg.steps: checkpoint every checkpoint_every steps and at the end (rank 0 writes, the others
    wait at the barrier so that a kill never finds them ahead), previews every sample_every steps. Returns when
    the loop itself started (perf_counter), so that steps per second leave out moving the data to the device."""
    cfg, dist, device, step = run.cfg, run.dist, run.device, run.step
    run.forward = dist.wrap(run.model)
    run.batches = TrainBatches.for_run(cfg, dist.rank, run.per_rank, run.dataset, run.snippets, run.mcfg,
                                       device)
    run.autocast = autocast(cfg.precision, device)
    meta_base = {"train": asdict(cfg), "model": run.mcfg.to_dict(), "memory": run.snippets.info}
    if dist.main and step < cfg.steps:
        log(f"training steps {step + 1}-{cfg.steps} on {device} ({count_params(run.model):,} "
            f"parameters, batch {cfg.batch_size}, {describe(cfg.precision, device)}, checkpoint every "
            f"{cfg.checkpoint_every})")
        hint = bf16_hint(cfg.precision, device)
        if hint:
            log(hint)
    shown = Progress("step", cfg.steps, start=step, tenths=False, enabled=progress and dist.main)
    t0 = time.perf_counter()
    since = (step, t0)
    try:
        while step < cfg.steps:
            loss_value = train_step(run, step)
            step += 1
            run.step = step
            run.losses.append(loss_value)
            checkpoint = dist.main and (step % cfg.checkpoint_every == 0 or step == cfg.steps)
            if checkpoint:
                seconds = run.seconds + time.perf_counter() - t0
                save_checkpoint(run.out, step, run.model, run.ema, run.opt,
                                dict(meta_base, losses=run.losses, train_seconds=round(seconds, 2)), run.extra)
            shown.update(step, note=f"  loss {loss_value:.4f}", line=checkpoint)
            if dist.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                preview = draw_preview(run.ema, run.mcfg, run.snippets, cfg, step, since, device, log)
                run.last_preview = preview or run.last_preview
                since = (step, time.perf_counter())
            if step % cfg.checkpoint_every == 0:
                dist.barrier()
    finally:
        shown.close()
    return t0


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = lambda s: None, overrides: tuple[str, ...] = ()) -> dict:
    """Run (or resume) training; returns {'losses': [...], 'steps_per_s': float, 'run_dir': str, ...}.
    The steps: check the config and processes, set up, restore, loop, finish (the result)."""
    cfg.validate()
    cfg = replace(cfg, data=data_spec(cfg.data))  # folders as absolute paths: eval, audit and export find them
    dist = Distributed(pick_device(cfg.device))
    if cfg.batch_size % dist.world:
        raise EdgediffError(f"--batch-size {cfg.batch_size} must be divisible by the {dist.world} processes")
    out = Path(cfg.out)
    cfg, point = check_resume(cfg, resume, overrides)
    run = _setup(cfg, point, out, dist, log)
    _restore(run, point, log)
    start_step = run.step
    t0 = _loop(run, progress, log)
    elapsed = time.perf_counter() - t0
    dist.close()
    done = run.step - start_step
    return {
        "run_dir": str(out),
        "steps": run.step,
        "trained": done,
        "losses": run.losses,
        "steps_per_s": done / elapsed if elapsed > 0 and done else math.nan,
        "params": count_params(run.model),
        "autocast": str(autocast_dtype(cfg.precision, run.device) or "float32").removeprefix("torch."),
        "last_preview": str(run.last_preview) if run.last_preview else None,
        "main_process": dist.main,  # under torchrun only rank 0 reports
    }
