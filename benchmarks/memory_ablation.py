"""Does the memory bank make a small patch model learn faster? FD-Lite0 against training steps, with and without.

Two runs of the project's own training loop (edgediff.train.train) on emoji at 32 px, grid 2, identical in every
setting (seed, model, batch, learning rate, batches drawn) except `memory`. The runs advance in lock-step: both
train to the next checkpoint (via --resume, which replays exactly the batches of an uninterrupted run), then both
are sampled with the same initial noise and scored with FD-Lite0 and KID against all real emoji. The memory model
is sampled GMem-style, with a uniformly random bank entry per image; the plain one with the null snippet.

The JSON is rewritten after every checkpoint, so a run cut short still leaves comparable partial results.

    python -m benchmarks.memory_ablation            # ≈ 1 h on 2 shared cores
    python -m benchmarks.memory_ablation --quick    # a few minutes: tiny budget, for checking the machinery
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_CPU_NOTE, machine_info, write_json, RESULTS, save_figure

# Sized for ≤ 1 h on 2 cores shared with other jobs (≈ 1 training step/s at dim 32, batch 32, one thread).
FULL = dict(checkpoints=[100, 250, 500, 750, 1000], n_samples=200, sampler_steps=8, dim=32,
            batch_size=32, lr=5e-4, ema_decay=0.995)
QUICK = dict(checkpoints=[20, 40], n_samples=48, sampler_steps=5, dim=16, batch_size=16, lr=5e-4, ema_decay=0.99)


def speedup(steps: list[int], fd_memory: list[float], fd_plain: list[float]) -> tuple[float | None, int | None]:
    """(plain's final step / first checkpoint step at which memory's FD ≤ plain's final FD, that step).

    Only measured checkpoints count (no interpolation), so the figure is conservative by up to one interval.
    """
    target = fd_plain[-1]
    for s, fd in zip(steps, fd_memory):
        if fd <= target:
            return steps[-1] / s, s
    return None, None


def real_floor(real: np.ndarray, n: int, seed: int) -> float:
    """FD-Lite0 of `n` random real images against all of them: what a perfect generator would score at this n
    (FD's small-sample bias), the floor the curves can approach."""
    from edgediff.metrics import fd_lite0

    idx = np.random.default_rng(seed).choice(len(real), n, replace=False)
    return fd_lite0(real[idx], real)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = len(result["fd_memory"])
    steps = result["steps"][:n]
    ax.plot(steps, result["fd_memory"], "o-", label="memory bank (Lite0 → PCA 64)")
    ax.plot(steps, result["fd_plain"][:n], "s-", label="plain (null snippet)")
    if result["fd_plain"]:
        ax.axhline(result["fd_plain"][n - 1], color="gray", ls=":", lw=1, label="plain, last checkpoint")
    s = result["settings"]
    if result.get("fd_real_floor") is not None:
        ax.axhline(result["fd_real_floor"], color="green", ls="--", lw=1, label=f"real vs real ({s['n_samples']})")
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"FD-Lite0 ({s['n_samples']} samples, {s['sampler_steps']} DDIM steps)")
    sp = result.get("speedup")
    ax.set_title(f"emoji {s['image_size']} px, grid {s['grid']}, dim {s['dim']}: speedup "
                 + (f"{sp:.2f}×" if sp else "not reached"), fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget: checks the machinery in a few minutes")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least contention on shared cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where the two runs live (default: a temp dir)")
    ap.add_argument("--extend", type=str, default=None,
                    help="STEPS,...: continue the runs kept in --workdir to these further checkpoints, appending to "
                         "the existing result JSON (same settings, same evaluation seed)")
    args = ap.parse_args(argv)

    import torch

    from edgediff.data import load_dataset
    from edgediff.encoders import dataset_features
    from edgediff.metrics import evaluate, generate_from_run
    from edgediff.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    preset = QUICK if args.quick else FULL
    settings = dict(preset, data="emoji", image_size=32, grid=2, mults=[1, 2, 2], snippet_dim=64,
                    snippet_dropout=0.2, seed=args.seed, threads=args.threads, quick=args.quick,
                    sampler="DDIM, same initial noise for both runs; memory: uniform random bank entry per image",
                    reference="all emoji at 32 px (Lite0 features of the real set)")
    name = "memory_ablation_quick" if args.quick else "memory_ablation"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgediff_memab_"))
    name_json = RESULTS / f"{name}.json"
    previous = None
    if args.extend:
        if args.workdir is None or not name_json.exists():
            raise SystemExit("--extend needs --workdir with the runs of a previous run and its result JSON")
        previous = json.loads(name_json.read_text())
        preset = dict(preset, checkpoints=[int(x) for x in args.extend.split(",")])
        settings["checkpoints"] = previous["settings"]["checkpoints"] + preset["checkpoints"]
    else:
        for arm in ("memory", "plain"):
            shutil.rmtree(work / arm, ignore_errors=True)

    dataset = load_dataset("emoji", 32)
    real = dataset_features(dataset)
    settings["n_real"] = len(real)

    def cfg(arm: str, steps: int) -> TrainConfig:
        return TrainConfig(
            data="emoji", out=str(work / arm), image_size=32, grid=2, steps=steps, batch_size=preset["batch_size"],
            lr=preset["lr"], ema_decay=preset["ema_decay"], seed=args.seed, memory=(arm == "memory"),
            snippet_dropout=0.2, sample_every=0, checkpoint_every=10**9,
            model={"dim": preset["dim"], "mults": [1, 2, 2], "snippet_dim": 64},
        )

    result = {"steps": [], "fd_memory": [], "fd_plain": [], "kid_memory": [], "kid_plain": [],
              "seam_memory": [], "seam_plain": [], "loss_memory": [], "loss_plain": [],
              "train_seconds": {"memory": 0.0, "plain": 0.0}, "speedup": None, "speedup_reached_at": None,
              "settings": settings, "machine": machine_info(), "note": SHARED_CPU_NOTE, "complete": False}
    result["fd_real_floor"] = real_floor(real, preset["n_samples"], args.seed)
    if previous is not None:
        for key, value in previous.items():
            if isinstance(value, list) and key in result:
                result[key] = value
        result["train_seconds"] = previous["train_seconds"]
        result["extended_from_step"] = previous["steps"][-1]
        result["machine_first_part"] = previous["machine"]
    t_start = time.perf_counter() - (previous or {}).get("wall_seconds", 0.0)
    for target in preset["checkpoints"]:
        for arm in ("memory", "plain"):
            t0 = time.perf_counter()
            out = train(cfg(arm, target), resume=(work / arm / "run.json").exists(), progress=False)
            result["train_seconds"][arm] += time.perf_counter() - t0
            result[f"loss_{arm}"].append(float(np.mean(out["losses"][-50:])))
            images, config = generate_from_run(work / arm, preset["n_samples"], steps=preset["sampler_steps"],
                                               seed=args.seed + 12345)
            scores = evaluate(images, dataset, config.grid, real_features=real, kid_subsets=50)
            result[f"fd_{arm}"].append(scores["fd_lite0"])
            result[f"kid_{arm}"].append(scores["kid"])
            result[f"seam_{arm}"].append(scores["seam_border"])
            print(f"[{time.perf_counter() - t_start:7.0f}s] step {target:5d} {arm:6s} FD-Lite0 {scores['fd_lite0']:8.2f}"
                  f" KID {scores['kid']:.4f} seam {scores['seam_border']:.3f} loss {result[f'loss_{arm}'][-1]:.4f}",
                  flush=True)
        result["steps"].append(target)
        result["speedup"], result["speedup_reached_at"] = speedup(result["steps"], result["fd_memory"],
                                                                  result["fd_plain"])
        result["wall_seconds"] = time.perf_counter() - t_start
        write_json(f"{name}.json", result)
        plot(result, RESULTS / f"{name}.png")
    result["complete"] = True
    result["machine_end"] = machine_info()
    write_json(f"{name}.json", result)
    plot(result, RESULTS / f"{name}.png")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    sp = result["speedup"]
    print(f"speedup: {sp:.2f}x (memory reached plain's final FD-Lite0 at step {result['speedup_reached_at']})"
          if sp else "speedup: memory never reached plain's final FD-Lite0")
    print(f"wrote {RESULTS / (name + '.json')} and .png")
    return result


if __name__ == "__main__":
    main()
