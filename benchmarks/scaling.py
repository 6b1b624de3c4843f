"""How the DiS state-space mixer and the attention mixer grow with the number of tokens, and what they buy in quality.

Part 1, mixer scaling (onnxruntime, CPU): one mixer of each kind at a fixed width (`--dim`, batch 1), exported
with torch.onnx.export (dynamo, external_data=False) for each token count 64 … 4096, checked against torch, then
run in its own fresh Python process: CPU time per call (median over calls after a warm-up, 1
onnxruntime thread; wall time is recorded too but on shared cores it mostly measures waiting) and activation memory =
peak RSS during the calls (VmHWM, reset with /proc/self/clear_refs after the session and input exist) minus the
RSS at that reset. The arena and memory pattern are off, so freed activations are really freed and the peak is
what the graph needs at once. Growth exponents are least-squares slopes of log(ms) and log(MB) against log(tokens).

Part 2, quality: UNet, DiS and DiT (attention) at roughly equal parameter counts, the same training steps, batch,
learning rate and seed, on emoji 32 px, grid 2, without the memory bank; FD-Lite0 (edgediff.metrics) of samples
from each EMA model against the dataset.

    python -m benchmarks.scaling                 # both parts: ≈ 35 min CPU on 2 shared cores
    python -m benchmarks.scaling --quick         # 3 token counts, 30 training steps: a few minutes
    python -m benchmarks.scaling --part mixer    # or: quality (the other part's results are kept)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, emit, machine_info, run_fresh, write_json

JSON_NAME = "scaling.json"
PNG_NAME = "scaling.png"
FULL_TOKENS = [64, 128, 256, 512, 1024, 2048, 4096]
QUICK_TOKENS = [64, 256, 1024]
# ~equal parameter counts (unet ≈ 164k, dis ≈ 178k, dit ≈ 192k at 32 px, grid 2, snippet_dim 64)
QUALITY_MODELS = {
    "unet": {"dim": 12, "mults": [1, 2, 2]},
    "dis": {"dim": 48, "depth": 6},
    "dit": {"dim": 64, "depth": 6},
}


# ---------------------------------------------------------------------------------------------------------------
# part 1: mixer scaling


def build_mixer_module(kind: str, dim: int, d_state: int, chunk: int):
    from edgediff.models.ssm import AttentionMixer, BiSSMMixer

    if kind == "ssm":
        return BiSSMMixer(dim, d_state=d_state, chunk=chunk).eval()
    return AttentionMixer(dim).eval()


def export_mixer(kind: str, tokens: int, dim: int, d_state: int, chunk: int, path: Path) -> dict:
    """Export one mixer at one token count; returns export time and max |ORT - torch| on a random input."""
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    module = build_mixer_module(kind, dim, d_state, chunk)
    u = torch.randn(1, tokens, dim)
    t0 = time.perf_counter()
    export_s = None
    if not path.exists():  # a kept --workdir reuses its exports (same seed, same weights)
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(module, (u,), str(tmp), input_names=["tokens"], output_names=["out"], external_data=False,
                          verbose=False)
        tmp.replace(path)
        export_s = round(time.perf_counter() - t0, 2)
    with torch.no_grad():
        want = module(u).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"tokens": u.numpy()})[0]
    from edgediff.models import count_params

    return {"export_s": export_s, "max_abs_diff_vs_torch": float(np.abs(got - want).max()),
            "params": count_params(module)}


def worker(path: str, tokens: int, dim: int, min_calls: int, min_seconds: float) -> None:
    """Runs in a fresh process: no torch, only numpy + onnxruntime + the RSS helpers."""
    import onnxruntime as ort

    from edgediff.runtime import rss

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, tokens, dim), dtype=np.float32)
    reset_ok = rss.reset_peak()
    base = rss.current_mb()
    session.run(None, {"tokens": x})  # warm-up (its peak counts: every call needs the same activations)
    cpu, wall = [], []
    start = time.perf_counter()
    while len(cpu) < min_calls or time.perf_counter() - start < min_seconds:
        c0, t0 = time.process_time(), time.perf_counter()
        session.run(None, {"tokens": x})
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    peak = rss.peak_mb()
    emit({"cpu_ms_per_call": 1000 * float(np.median(cpu)), "wall_ms_median": 1000 * float(np.median(wall)),
          "wall_ms_min": 1000 * float(min(wall)), "calls": len(cpu), "baseline_mb": base, "peak_mb": peak,
          "activation_mb": peak - base, "reset_peak": reset_ok})


def run_worker(path: Path, tokens: int, dim: int, min_calls: int, min_seconds: float) -> dict:
    return run_fresh("benchmarks.scaling", ["--worker", path, "--worker-tokens", tokens, "--dim", dim,
                                            "--min-calls", min_calls, "--min-seconds", min_seconds], timeout=3600)


def fit_exponent(tokens: list[int], values: list[float]) -> float | None:
    """Slope of log(value) on log(tokens): 1 = linear growth, 2 = quadratic."""
    pts = [(t, v) for t, v in zip(tokens, values) if v > 0]
    if len(pts) < 2:
        return None
    t, v = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(t, v, 1)[0])


def mixer_part(args, workdir: Path) -> dict:
    rows = []
    for kind in ("ssm", "attention"):
        for tokens in args.tokens:
            path = workdir / f"{kind}_{tokens}.onnx"
            info = export_mixer(kind, tokens, args.dim, args.d_state, args.chunk, path)
            meas = run_worker(path, tokens, args.dim, args.min_calls, args.min_seconds)
            row = {"mixer": kind, "tokens": tokens, "ms_per_call": round(meas["cpu_ms_per_call"], 4),
                   "activation_mb": round(meas["activation_mb"], 3), **info,
                   **{k: meas[k] for k in ("wall_ms_median", "wall_ms_min", "calls", "baseline_mb", "peak_mb",
                                           "reset_peak")}}
            rows.append(row)
            print(f"{kind:9s} {tokens:5d} tokens: {row['ms_per_call']:9.3f} ms/call, {row['activation_mb']:8.2f} MB "
                  f"activations (|ort-torch| {info['max_abs_diff_vs_torch']:.1e})", flush=True)
            if not args.workdir:
                path.unlink(missing_ok=True)

    def exps(kind: str, key: str, lo: int = 0) -> float | None:
        sel = [r for r in rows if r["mixer"] == kind and r["tokens"] >= lo]
        return fit_exponent([r["tokens"] for r in sel], [r[key] for r in sel])

    upper = args.tokens[len(args.tokens) // 2]
    out = {
        "ssm_exponent": exps("ssm", "ms_per_call"),
        "attention_exponent": exps("attention", "ms_per_call"),
        "ssm_memory_exponent": exps("ssm", "activation_mb"),
        "attention_memory_exponent": exps("attention", "activation_mb"),
        "upper_range_from_tokens": upper,
        "ssm_exponent_upper": exps("ssm", "ms_per_call", upper),
        "attention_exponent_upper": exps("attention", "ms_per_call", upper),
        "ssm_memory_exponent_upper": exps("ssm", "activation_mb", upper),
        "attention_memory_exponent_upper": exps("attention", "activation_mb", upper),
        "rows": rows,
        "mixer_settings": {"dim": args.dim, "batch": 1, "tokens": args.tokens, "d_state": args.d_state,
                           "ssm_chunk": args.chunk, "ssm_expand": 2, "ssm_headdim": 64, "attention_headdim": 32,
                           "ort": "arena off, mem pattern off, ORT_ENABLE_EXTENDED, 1 intra-op thread",
                           "min_calls": args.min_calls, "min_seconds": args.min_seconds,
                           "ms_per_call": "median CPU time (process_time) per call with 1 onnxruntime thread: on "
                                          "the shared, overloaded cores wall time mostly measures waiting for a "
                                          "core (wall_ms_median / wall_ms_min are recorded too)",
                           "exponent_fit": "least squares on log-log over all token counts; *_upper: tokens >= "
                                           "upper_range_from_tokens (fixed per-call overhead matters less)"},
    }
    print(f"time exponents: ssm {out['ssm_exponent']:.2f}, attention {out['attention_exponent']:.2f}; "
          f"memory exponents: ssm {out['ssm_memory_exponent']}, attention {out['attention_memory_exponent']}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# part 2: quality at equal parameters and steps


def quality_part(args, workdir: Path, save=None) -> dict:
    """Train, sample and score each backbone in turn; `save(partial)` is called after each one."""
    import torch

    from edgediff.checkpoint import latest_checkpoint, load_ema_model
    from edgediff.data import load_dataset
    from edgediff.images import to_uint8
    from edgediff.metrics import evaluate, quality_fields
    from edgediff.torch_sampler import sample_torch
    from edgediff.models import count_params
    from edgediff.train import TrainConfig, train

    dataset = load_dataset("emoji", 32)
    settings = _quality_settings(args)
    rows = []
    for backbone in args.backbones:
        model = QUALITY_MODELS[backbone]
        cfg = TrainConfig(
            data="emoji", out=str(workdir / f"quality_{backbone}"), image_size=32, grid=2, backbone=backbone,
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
            warmup_steps=min(100, max(1, args.steps // 10)), seed=0, memory=False, sample_every=0,
            checkpoint_every=args.steps, model=dict(model, snippet_dim=64),
        )
        found = latest_checkpoint(Path(cfg.out)) if Path(cfg.out).exists() else None
        t0, cpu0 = time.perf_counter(), time.process_time()
        if found is None or found[1]["step"] < args.steps:
            result = train(cfg, resume=found is not None, progress=False)
            train_s, steps_per_s = time.perf_counter() - t0, result["steps_per_s"]
        else:
            train_s, steps_per_s = None, None  # reused a finished run from --workdir
        train_cpu_s = time.process_time() - cpu0
        ema, mcfg, meta = load_ema_model(Path(cfg.out))
        params = count_params(ema)
        t1 = time.perf_counter()
        with torch.no_grad():
            imgs = sample_torch(ema, mcfg, n=args.n, steps=args.sample_steps, seed=1,
                                cells_per_call=min(256, args.n * mcfg.num_cells))
        sample_s = time.perf_counter() - t1
        metrics = evaluate(to_uint8(imgs), dataset, grid=2)
        row = {"backbone": backbone, "params": params, "steps": int(meta["step"]),
               **quality_fields(metrics),
               "seam_border": metrics["seam_border"], "final_loss_mean_last50": float(np.mean(meta["losses"][-50:])),
               "model": model, "train_wall_s": train_s, "train_cpu_s": round(train_cpu_s, 1),
               "train_steps_per_s": steps_per_s, "sample_wall_s": round(sample_s, 1)}
        rows.append(row)
        print(f"{backbone}: {params:,} params, {row['steps']} steps, FD-Lite0 {row['fd_lite0']:.2f}, "
              f"KID {row['kid']:.4f}", flush=True)
        if save is not None:
            save({"quality": rows, "quality_settings": settings(len(dataset))})
    return {"quality": rows, "quality_settings": settings(len(dataset))}


def _quality_settings(args):
    """Every setting of the quality part, recorded next to its rows."""
    return lambda images: {
        "data": "emoji", "images": images, "image_size": 32, "grid": 2, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay, "memory_bank": False, "seed": 0,
        "n_generated": args.n, "sampler": f"DDIM {args.sample_steps} steps, null snippet",
        "metric": "edgediff.metrics.evaluate (FD-Lite0 vs all dataset images)",
        "models": QUALITY_MODELS,
    }


# ---------------------------------------------------------------------------------------------------------------


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if result.get("quality") else 2
    if not result.get("rows") and not result.get("quality"):
        return
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for key, ax, label in (("ms_per_call", axes[0], "ms per call"), ("activation_mb", axes[1], "activation MB")):
        for kind, color in (("ssm", "tab:blue"), ("attention", "tab:red")):
            rows = [r for r in result.get("rows", []) if r["mixer"] == kind and r[key] > 0]
            if not rows:
                continue
            exp = result.get(f"{kind}_exponent" if key == "ms_per_call" else f"{kind}_memory_exponent")
            ax.loglog([r["tokens"] for r in rows], [r[key] for r in rows], "o-", color=color,
                      label=f"{kind} (slope {exp:.2f})" if exp is not None else kind)
        ax.set_xlabel("tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend()
    axes[0].set_title(f"mixer, dim {result.get('mixer_settings', {}).get('dim')}, onnxruntime CPU")
    if panels == 3:
        q = result["quality"]
        ax = axes[2]
        ax.bar([f"{r['backbone']}\n{r['params'] / 1e3:.0f}k" for r in q], [r["fd_lite0"] for r in q],
               color=["tab:gray", "tab:blue", "tab:red"][: len(q)])
        ax.set_ylabel("FD-Lite0 (lower is better)")
        ax.set_title(f"emoji 32 px, grid 2, {q[0]['steps']} steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 token counts, 30 training steps, 32 samples")
    ap.add_argument("--part", choices=["all", "mixer", "quality"], default="all")
    ap.add_argument("--dim", type=int, default=64, help="mixer width for the scaling part")
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=64, help="SSD chunk length of the benchmarked SSM mixer")
    ap.add_argument("--tokens", type=str, default=None, help="comma-separated token counts")
    ap.add_argument("--min-calls", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=None, help="training steps per backbone (quality part)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--n", type=int, default=None, help="generated images per backbone for FD-Lite0")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--backbones", type=str, default=",".join(QUALITY_MODELS), help="quality part: which ones")
    ap.add_argument("--workdir", type=str, default=None, help="keep runs here (finished runs are reused)")
    ap.add_argument("--out", type=str, default=JSON_NAME)
    ap.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-tokens", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.worker_tokens, args.dim, args.min_calls, args.min_seconds)
        return {}
    args.tokens = [int(t) for t in args.tokens.split(",")] if args.tokens else (
        QUICK_TOKENS if args.quick else FULL_TOKENS)
    args.steps = args.steps or (30 if args.quick else 400)
    args.backbones = [b for b in args.backbones.split(",") if b]
    if not set(args.backbones) <= set(QUALITY_MODELS):
        ap.error(f"--backbones: choose from {','.join(QUALITY_MODELS)}")
    args.n = args.n or (32 if args.quick else 256)
    if args.quick:
        args.min_seconds = min(args.min_seconds, 0.5)

    path = RESULTS / args.out
    png = path.with_name(PNG_NAME if args.out == JSON_NAME else Path(args.out).stem + ".png")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edgediff_scaling_"))
    workdir.mkdir(parents=True, exist_ok=True)

    def save(part: dict) -> dict:
        """Merge into the file as it is now: the two parts may run as separate processes at the same time."""
        current = json.loads(path.read_text()) if path.exists() else {}
        if "quality" in part:  # rows of backbones measured by another process stay
            mine = {r["backbone"] for r in part["quality"]}
            kept = [r for r in current.get("quality", []) if r["backbone"] not in mine]
            order = list(QUALITY_MODELS)
            part = dict(part, quality=sorted(kept + part["quality"], key=lambda r: order.index(r["backbone"])))
        current.update(part, benchmark="scaling", note=SHARED_CPU_NOTE)
        write_json(args.out, current)
        plot(current, png)
        return current

    result: dict = {}
    if args.part in ("all", "mixer"):
        result = save(dict(mixer_part(args, workdir), quick_mixer=args.quick, machine_mixer=machine_info()))
    if args.part in ("all", "quality"):
        result = save(dict(quality_part(args, workdir, lambda partial: save(
            dict(partial, quick_quality=args.quick, machine_quality=machine_info()))),
            quick_quality=args.quick, machine_quality=machine_info()))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
