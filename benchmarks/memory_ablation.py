"""Does the memory bank (or representation alignment) make a small patch model learn faster? One run, five arms.

Arms, identical in seed, widths, batch, learning rate, data and batches drawn (edgediff.train.train; resume replays
exactly the batches of an uninterrupted run):

    plain        no bank (null snippet)
    bank         the bank as shipped: Lite0 → PCA 64, whole-vector null 0.2
    bank_gmem    GMem-faithful: full 1280-d normalised Lite0 feature, element-wise dropout 0.4 + null 0.1
    align        no bank, representation alignment (--align 0.5) to Lite0's spatial map
    bank_align   the bank as shipped + alignment

The arms advance in lock-step to each checkpoint, then each is sampled (same initial noise, bank arms with a
uniformly random bank entry per image, no guidance) and scored with FD and KID in Lite0 space (the bank's) and in
the independent network's (edgediff/encoders_independent.py), against all real emoji. For each arm and metric,
the speed-up is plain's last measured step ÷ the first checkpoint at which the arm's FD ≤ plain's FD there.

Resumable across sessions: runs live in --workdir (default runs/ablation, git-ignored), every score is a file
there, and the JSON and PNG are rebuilt from whatever exists, saying how far each arm got. Run it again with the
same arguments to continue.

    python -m benchmarks.memory_ablation                  # 5 arms × 4,000 steps: many CPU hours; resumable
    python -m benchmarks.memory_ablation --quick          # minutes: tiny budget, checks the machinery
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, save_figure, write_json
from edgediff.files import atomic_write_bytes

FULL = dict(checkpoints=[250, 500, 750, 1000, 1500, 2000, 3000, 4000], n_samples=200, sampler_steps=8, dim=32,
            batch_size=32, lr=5e-4, ema_decay=0.995, checkpoint_every=250)
QUICK = dict(checkpoints=[10, 20], n_samples=24, sampler_steps=3, dim=8, batch_size=8, lr=5e-4, ema_decay=0.99,
             checkpoint_every=10)
ALIGN_WEIGHT = 0.5  # GMem's and REPA's weight
# arm → TrainConfig overrides
ARMS = {
    "plain": dict(memory=False),
    "bank": dict(memory=True, snippet_dropout=0.2),
    "bank_gmem": dict(memory=True, snippet_mode="gmem", snippet_element_dropout=0.4, snippet_dropout=0.1),
    "align": dict(memory=False, align=ALIGN_WEIGHT),
    "bank_align": dict(memory=True, snippet_dropout=0.2, align=ALIGN_WEIGHT),
}
MEMORY_ARMS = ("bank", "bank_gmem", "bank_align")
METRICS = {"lite0": ("fd_lite0", "kid"), "independent": ("fd_independent", "kid_independent")}


def speedup(steps: list[int], fd_arm: list[float], plain_steps: list[int], fd_plain: list[float]
            ) -> tuple[float | None, int | None]:
    """(plain's last measured step ÷ the first checkpoint at which the arm's FD ≤ plain's FD there, that checkpoint):
    how many times fewer steps the arm needs to reach plain's final FD.

    Only measured checkpoints count (no interpolation), so the figure is conservative by up to one interval;
    None when the arm has not got there (yet)."""
    if not plain_steps:
        return None, None
    for s, fd in zip(steps, fd_arm):
        if fd <= fd_plain[-1]:
            return plain_steps[-1] / s, s
    return None, None


def collect(work: Path, checkpoints: list[int]) -> dict:
    """Scores on disk → {arm: {step: score dict}} for the planned checkpoints."""
    out: dict = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for s in checkpoints:
            f = work / "scores" / f"{arm}_{s:06d}.json"
            if f.exists():
                out[arm][s] = json.loads(f.read_text())
    return out


def build_result(scores: dict, checkpoints: list[int], settings: dict, independent_name: str) -> dict:
    """The issue's JSON from whatever scores exist: arms list every measured checkpoint in order (an arm that got
    less far has shorter lists, and `steps_done` says how far)."""
    arms = []
    for arm in ARMS:
        done = [s for s in checkpoints if s in scores[arm]]
        row = {"name": arm, "config": ARMS[arm], "steps_done": done,
               "fd_lite0": [scores[arm][s]["fd_lite0"] for s in done],
               "fd_independent": [scores[arm][s]["fd_independent"] for s in done],
               "kid_lite0": [scores[arm][s]["kid"] for s in done],
               "kid_independent": [scores[arm][s]["kid_independent"] for s in done],
               "loss_last50": [scores[arm][s]["loss_last50"] for s in done],
               "train_seconds": sum(scores[arm][s]["train_seconds"] for s in done)}
        arms.append(row)
    plain = arms[0]
    for row in arms[1:]:
        for m in METRICS:
            row[f"speedup_{m}"], row[f"reached_plain_final_{m}_at"] = speedup(
                row["steps_done"], row[f"fd_{m}"], plain["steps_done"], plain[f"fd_{m}"])
    arms[0].update(speedup_lite0=1.0 if plain["steps_done"] else None,
                   speedup_independent=1.0 if plain["steps_done"] else None)
    common = [s for s in checkpoints if all(s in scores[a] for a in ARMS)]
    mem = [r for r in arms if r["name"] in MEMORY_ARMS and r["speedup_independent"] is not None]
    best = max(mem, key=lambda r: r["speedup_independent"]) if mem else None
    return {"benchmark": "memory_ablation", "steps": common, "planned_steps": checkpoints,
            "metric_independent": independent_name, "arms": arms,
            "speedup": best["speedup_independent"] if best else None,
            "speedup_arm": best["name"] if best else None,
            "complete": common == checkpoints, "settings": settings}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    s = result["settings"]
    for ax, (m, label) in zip(axes, (("lite0", "FD-Lite0 (the bank's space)"),
                                     ("independent", f"FD-independent ({result['metric_independent']})"))):
        for row in result["arms"]:
            if row["steps_done"]:
                ax.plot(row["steps_done"], row[f"fd_{m}"], "o-", ms=3, label=row["name"])
        plain = result["arms"][0]
        if plain["steps_done"]:
            ax.axhline(plain[f"fd_{m}"][-1], color="gray", ls=":", lw=1)
        ax.set_xlabel("training steps")
        ax.set_ylabel(f"{label}\n{s['n_samples']} samples, {s['sampler_steps']} DDIM steps", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    sp = result.get("speedup")
    fig.suptitle(f"emoji {s['image_size']} px, grid {s['grid']}, dim {s['dim']}, batch {s['batch_size']}: best "
                 f"memory arm's independent speed-up " + (f"{sp:.2f}× ({result['speedup_arm']})" if sp else
                                                          "not reached"), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _train_config(arm: str, steps: int, work: Path, preset: dict, seed: int):
    from edgediff.train import TrainConfig

    return TrainConfig(data="emoji", out=str(work / arm), image_size=32, grid=2, steps=steps,
                       batch_size=preset["batch_size"], lr=preset["lr"], ema_decay=preset["ema_decay"], seed=seed,
                       sample_every=0, checkpoint_every=preset["checkpoint_every"],
                       model={"dim": preset["dim"], "mults": [1, 2, 2], "snippet_dim": 64}, **ARMS[arm])


def _run_step(arm: str, target: int, work: Path, preset: dict, seed: int, dataset, real: dict) -> dict:
    """Train `arm` to `target` (resuming) and score it; the score file is written atomically."""
    from edgediff.checkpoint import latest_checkpoint
    from edgediff.evaluate import generate_from_run
    from edgediff.metrics import evaluate
    from edgediff.train import train

    t0 = time.perf_counter()
    resume = (work / arm / "run.json").exists()  # the first checkpoint starts the run, later ones continue it
    out = train(_train_config(arm, target, work, preset, seed), resume=resume, progress=False)
    train_s = time.perf_counter() - t0
    _, meta = latest_checkpoint(work / arm)
    images, config = generate_from_run(work / arm, preset["n_samples"], steps=preset["sampler_steps"],
                                       seed=seed + 12345)
    sc = evaluate(images, dataset, config.grid, real_features=real["lite0"],
                  real_features_independent=real["independent"], kid_subsets=50)
    row = {k: sc[k] for k in ("fd_lite0", "kid", "fd_independent", "kid_independent", "seam_border")}
    row.update(step=int(meta["step"]), loss_last50=float(np.mean(out["losses"][-50:])), train_seconds=train_s,
               eval_seconds=time.perf_counter() - t0 - train_s)
    atomic_write_bytes(work / "scores" / f"{arm}_{target:06d}.json", json.dumps(row, indent=1).encode())
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget: checks the machinery in minutes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least contention on shared cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="runs and scores (default runs/ablation[_quick])")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of the arms to advance")
    ap.add_argument("--until", type=int, default=None, help="stop after this checkpoint step (resume later)")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: rebuild the JSON and PNG from the scores in --workdir, print the table")
    args = ap.parse_args(argv)

    import torch

    from edgediff.data import load_dataset
    from edgediff.encoders import dataset_features
    from edgediff.encoders_independent import NAME

    torch.set_num_threads(args.threads)
    preset = QUICK if args.quick else FULL
    name = "memory_ablation_quick" if args.quick else "memory_ablation"
    work = args.workdir or Path("runs") / ("ablation_quick" if args.quick else "ablation")
    (work / "scores").mkdir(parents=True, exist_ok=True)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    settings = dict(preset, data="emoji", image_size=32, grid=2, mults=[1, 2, 2], snippet_dim=64, seed=args.seed,
                    threads=args.threads, quick=args.quick, align_weight=ALIGN_WEIGHT, align_until=0,
                    sampler="DDIM, same initial noise for every arm; bank arms: uniform random bank entry, no guidance",
                    reference="all emoji at 32 px", machine=machine_info(), note=SHARED_CPU_NOTE)
    dataset = load_dataset("emoji", 32)
    real = {"lite0": dataset_features(dataset), "independent": dataset_features(dataset, encoder="independent")}
    t_start = time.perf_counter()
    for target in [] if args.report else preset["checkpoints"]:
        if args.until is not None and target > args.until:
            break
        for arm in arms:
            if (work / "scores" / f"{arm}_{target:06d}.json").exists():
                continue
            row = _run_step(arm, target, work, preset, args.seed, dataset, real)
            print(f"[{time.perf_counter() - t_start:7.0f}s] step {target:5d} {arm:10s} FD-Lite0 {row['fd_lite0']:7.2f}"
                  f" FD-ind {row['fd_independent']:7.2f} KID {row['kid']:.4f}/{row['kid_independent']:.4f}"
                  f" loss {row['loss_last50']:.4f}", flush=True)
            result = build_result(collect(work, preset["checkpoints"]), preset["checkpoints"], settings, NAME)
            write_json(f"{name}.json", result)
            plot(result, RESULTS / f"{name}.png")
    result = build_result(collect(work, preset["checkpoints"]), preset["checkpoints"], settings, NAME)
    result["settings"]["machine_end"] = machine_info()
    write_json(f"{name}.json", result)
    plot(result, RESULTS / f"{name}.png")
    print(markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    """The README table: FD-Lite0 / FD-independent of every arm at each checkpoint all arms have reached, then
    each arm's speed-ups to plain's final FD."""
    def fmt(x):
        return "–" if x is None else f"{x:.2f}×"

    steps = result["steps"]
    head = "| arm | " + " | ".join(f"FD-Lite0 / FD-indep. at {s:,}" for s in steps) + \
        " | speed-up Lite0 | speed-up independent |"
    lines = [head, "|---|" + "---|" * (len(steps) + 2)]
    for r in result["arms"]:
        cells = [f"{r['fd_lite0'][i]:.1f} / {r['fd_independent'][i]:.1f}" for i in range(len(steps))]
        lines.append(f"| {r['name']} | " + " | ".join(cells) +
                     f" | {fmt(r.get('speedup_lite0'))} | {fmt(r.get('speedup_independent'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
