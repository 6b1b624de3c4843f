"""Peak memory and speed of `edgediff sample` against diffusers on torch, at equal parameter count, and the floor.

Every configuration runs in its own fresh Python process (a process that already ran another model carries its
heap and arena with it), and memory is the kernel's own accounting: VmRSS and VmHWM from /proc/self/status.

edgediff rows: the real `edgediff sample BUNDLE --n 1 --steps 20 --precision P --memory-budget B` command line,
run in-process by the probe (edgediff.cli.main), for resolutions 64, 128, 256, 512, grids 1 (the full-image
baseline, same code path), 2, 4, 8 and fp32 / int8. B is the planner's own floor for that bundle (+1 MiB), asked
for first in a separate process: so each row is "the smallest budget edgediff accepts", and the planner then picks
its lean plan. The probe only observes: it wraps the sampler's `create_session` and `sample_loop` to read RSS right
after loading and to time the steps. Bundles are exported by the project's exporter from an untrained model of
the benchmark widths (memory and speed do not depend on training); the int8 calibration set is cut to a few rows,
because the values it calibrates do not change the graph, only its scales.

diffusers rows: `UNet2DModel` (conv only: DownBlock2D/UpBlock2D, no mid attention, scale-shift time conditioning,
which is what edgediff's ResBlocks do) with widths chosen so its parameter count is within 5% of edgediff's
full-image model, + `DDIMScheduler`, 20 steps, batch 1, torch CPU, under `torch.inference_mode()`.

The analytic floor of an edgediff configuration (MiB):
    baseline RSS of the process before the model loads (measured in that same run: interpreter, numpy,
    onnxruntime, pillow, the CLI)
  + resident weights (bytes of the ONNX file's initializers)
  + two image buffers (x_t and x_{t-1}: 2 × C × H × W × 4 bytes)
  + the largest set of simultaneously live activation tensors of one cell at batch 1: shapes from
    onnx.shape_inference, a liveness pass over the topologically ordered nodes (a tensor lives from the node that
    makes it to its last reader; tensors computable from initializers alone count as weights, not activations).

    python -m benchmarks.peak_memory            # full: ≈ 40-60 min on 2 shared cores (exports 16 bundles)
    python -m benchmarks.peak_memory --quick    # 64 and 128 px, grids 1 and 2: a few minutes
    python -m benchmarks.peak_memory --only diffusers   # or: edgediff, floor
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, emit, machine_info, run_fresh, write_json, save_figure
from edgediff.runtime import rss  # stdlib only, so the interpreter baseline stays torch- and numpy-free
from edgediff.units import MIB

STEPS = 20
WIDTHS = dict(dim=64, mults=(1, 2, 2), num_res_blocks=1)  # edgediff's default UNet widths (~4.5M parameters)
FULL = dict(resolutions=[64, 128, 256, 512], grids=[1, 2, 4, 8], precisions=["fp32", "int8"], auto_at=[512])
QUICK = dict(resolutions=[64, 128], grids=[1, 2], precisions=["fp32", "int8"], auto_at=[])
# diffusers widths matched to WIDTHS (parameter counts are compared and recorded in every row)
DIFFUSERS_UNET = dict(block_out_channels=(64, 128, 128), layers_per_block=1, down_block_types=("DownBlock2D",) * 3,
                      up_block_types=("UpBlock2D",) * 3, add_attention=False, resnet_time_scale_shift="scale_shift",
                      norm_num_groups=32, in_channels=3, out_channels=3)
CALIB_TIMESTEPS = (800, 200)  # int8 calibration of the benchmark bundles: one row per timestep and cell
JSON_NAME = "peak_memory.json"


# ---------------------------------------------------------------------------------------------------------------
# diffusers probe (fresh process)


def probe_diffusers(resolution: int, steps: int, threads: int) -> dict:
    """diffusers UNet2DModel + DDIMScheduler, batch 1, `steps` steps; RSS before/after load and peak (VmHWM)."""
    interp_mb = rss.current_mb()
    import numpy  # noqa: F401
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    from edgediff.models import count_params

    torch.set_num_threads(threads)
    base = rss.current_mb()
    t0 = time.perf_counter()
    model = UNet2DModel(sample_size=resolution, **DIFFUSERS_UNET).eval().requires_grad_(False)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    sched.set_timesteps(steps)
    load_s = time.perf_counter() - t0
    after_load = rss.current_mb()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, resolution, resolution, generator=g)
    times = []
    with torch.inference_mode():
        for t in sched.timesteps:
            ts = time.perf_counter()
            eps = model(x, t).sample
            x = sched.step(eps, t, x).prev_sample
            times.append(time.perf_counter() - ts)
    peak = rss.peak_mb()
    return {
        "tool": "diffusers", "resolution": resolution, "grid": 1, "precision": "fp32", "steps": steps,
        "params": count_params(model), "interpreter_mb": round(interp_mb, 1),
        "baseline_mb": round(base, 1), "after_load_mb": round(after_load, 1), "peak_mb": round(peak, 1),
        "activation_mb": round(peak - after_load, 1), "s_per_step": round(sum(times) / len(times), 4),
        "s_per_step_min": round(min(times), 4), "total_s": round(sum(times), 2), "load_s": round(load_s, 2),
        "threads": torch.get_num_threads(), "finite": bool(torch.isfinite(x).all()),
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "settings": {"unet": {k: list(v) if isinstance(v, tuple) else v for k, v in DIFFUSERS_UNET.items()},
                     "scheduler": "DDIMScheduler(squaredcos_cap_v2)", "mode": "torch.inference_mode"},
    }


# ---------------------------------------------------------------------------------------------------------------
# edgediff probes (fresh processes)


def probe_floor(bundle: str, precision: str, steps: int, threads: int) -> dict:
    """The planner's smallest acceptable budget for --n 1, asked the way a user would: `edgediff sample` with an
    impossible budget (refused before any model file is read). Same imports as `probe_edgediff`, so the process
    holds what the measured run will hold when it plans."""
    import edgediff.cli as cli
    import edgediff.runtime.sampler  # noqa: F401  (as in probe_edgediff)
    from edgediff.runtime.planner import BudgetError

    out = Path(tempfile.mkdtemp(prefix="edgediff-bench-")) / "sample.png"
    sys.argv = ["edgediff", "--debug", "sample", bundle, "--n", "1", "--steps", str(steps), "--seed", "0",
                "--precision", precision, "--threads", str(threads), "--memory-budget", "1MiB", "--out", str(out)]
    try:
        cli.main()
    except BudgetError as e:
        return {"planner_floor_mb": float(e.floor_mb)}
    raise RuntimeError("a 1 MiB budget was accepted: the planner did not refuse it")


def probe_edgediff(bundle: str, precision: str, steps: int, budget_mb: float | None, threads: int) -> dict:
    """Run the real `edgediff sample` CLI in this process, observing RSS after load and the time of each step."""
    import edgediff.cli as cli
    import edgediff.runtime.sampler as smp

    base = rss.current_mb()  # interpreter + numpy + onnxruntime + pillow + typer + edgediff: the CLI's baseline
    obs: dict = {"step_times": []}
    orig_create, orig_loop = smp.create_session, smp.sample_loop

    def create_session(path, settings):
        obs["before_load_mb"] = rss.current_mb()
        t0 = time.perf_counter()
        s = orig_create(path, settings)
        obs["load_s"] = time.perf_counter() - t0
        obs["after_load_mb"] = rss.current_mb()
        obs["load_peak_mb"] = rss.peak_mb()
        obs["reset"] = rss.reset_peak()  # from here VmHWM measures the sampling phase alone
        obs["settings"] = settings.to_dict()
        return s

    def sample_loop(eps_fn, **kw):
        inner = kw.get("on_step")
        last = [time.perf_counter()]

        def on_step(k):
            now = time.perf_counter()
            obs["step_times"].append(now - last[0])
            last[0] = now
            if inner is not None:
                inner(k)

        kw["on_step"] = on_step
        x = orig_loop(eps_fn, **kw)
        obs["loop_peak_mb"] = rss.peak_mb()
        return x

    smp.create_session, smp.sample_loop = create_session, sample_loop
    out = Path(tempfile.mkdtemp(prefix="edgediff-bench-")) / "sample.png"
    argv = ["edgediff", "sample", bundle, "--n", "1", "--steps", str(steps), "--seed", "0", "--precision", precision,
            "--threads", str(threads), "--out", str(out)]
    if budget_mb is not None:
        argv += ["--memory-budget", f"{budget_mb:.1f}MiB"]
    sys.argv = argv
    import contextlib
    import io

    text = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        try:
            cli.main()
        except SystemExit as e:
            code = int(e.code or 0)
    end_peak = rss.peak_mb()
    peak = max(obs.get("load_peak_mb", 0.0), end_peak)
    times = obs["step_times"]
    plan_line = next((ln for ln in text.getvalue().splitlines() if ln.startswith("plan:")), None)
    return {
        "exit_code": code, "baseline_mb": round(base, 1),
        "before_load_mb": round(obs.get("before_load_mb", math.nan), 1),
        "after_load_mb": round(obs.get("after_load_mb", math.nan), 1), "peak_mb": round(peak, 1),
        "load_peak_mb": round(obs.get("load_peak_mb", math.nan), 1),
        "activation_mb": round(obs.get("loop_peak_mb", math.nan) - obs.get("after_load_mb", math.nan), 1),
        "s_per_step": round(sum(times) / len(times), 4) if times else None,
        "s_per_step_min": round(min(times), 4) if times else None, "total_s": round(sum(times), 2),
        "load_s": round(obs.get("load_s", math.nan), 3), "session_settings": obs.get("settings"),
        "plan": plan_line, "peak_reset_worked": obs.get("reset"), "cli_output": text.getvalue()[-600:],
        "wrote_png": out.is_file(),
    }


def run_probe(args: list[str], timeout: float = 3600) -> dict:
    """`python -m benchmarks.peak_memory --probe ...` in a fresh process; its result parsed back."""
    return run_fresh("benchmarks.peak_memory", args, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# benchmark bundles: untrained models of the benchmark widths, exported by the project's exporter


def make_data_folder(root: Path, n: int = 8) -> Path:
    """A handful of emoji as PNGs: the export's parity check and int8 calibration read the run's training data,
    and the full emoji set at 512 px would be gigabytes."""
    from edgediff.data import load_dataset
    from edgediff.images import save_png

    folder = root / "data"
    if not folder.is_dir() or len(list(folder.glob("*.png"))) < n:
        ds = load_dataset("emoji", 64)
        for i in range(n):
            save_png(ds.images[i * 37 % len(ds)], folder / f"{i:02d}.png")
    return folder


def make_untrained_run(run_dir: Path, resolution: int, grid: int, data: Path, halo: int = 0) -> int:
    """A run directory whose checkpoint holds an untrained model of WIDTHS at (resolution, grid); no memory bank.

    The UNet zero-initialises its last convs (its output would be exactly 0); they get small random weights here so
    the int8 calibration sees non-degenerate ranges, and every parameter a tiny jitter. Returns the parameter count.
    """
    import torch

    from edgediff.checkpoint import latest_checkpoint, save_checkpoint
    from edgediff.images import atomic_write_bytes
    from edgediff.models import ModelConfig, build_model, count_params

    config = ModelConfig(image_size=resolution, grid=grid, halo=halo, **WIDTHS)
    torch.manual_seed(0)
    model = build_model(config)
    params = count_params(model)
    if latest_checkpoint(run_dir) if run_dir.exists() else None:
        return params
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0.0, 0.02)
            # untrained GroupNorm/bias vectors are identical (ones, zeros); the exporter de-duplicates identical
            # initializers into one shared tensor, which the int8 quantiser refuses: jitter them as training would
            p.add_(torch.randn_like(p) * 1e-3)
    train = {"data": str(data), "image_size": resolution, "grid": grid, "memory": False, "steps": 0,
             "note": "untrained: peak-memory benchmark bundle"}
    meta = {"train": train, "model": config.to_dict(), "memory": {}}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "run.json", json.dumps(meta, indent=1).encode())
    opt = torch.optim.AdamW(model.parameters())
    import copy

    save_checkpoint(run_dir, 0, model, copy.deepcopy(model), opt, dict(meta, losses=[]))
    return params


def export_bench_bundle(run_dir: str, out: str, int8: bool, lean_profile: bool = False, ort: bool = False) -> dict:
    """`edgediff export` (fresh process) with a calibration set cut to one row per timestep in CALIB_TIMESTEPS and
    cell, and parity checked at one timestep: the 512 px full-image model cannot calibrate on 1024 rows here."""
    from edgediff_export import ExportOptions, export_run

    # lean_profile: the time-boxed full run profiles only the lean mode the budget-floor rows use
    options = ExportOptions(int8=int8, profile=not ort, int8_measure=False, calib_timesteps=CALIB_TIMESTEPS,
                            calib_rows=len(CALIB_TIMESTEPS), parity_timesteps=(500,),
                            profile_modes=("lean",) if lean_profile else None)
    t0 = time.perf_counter()
    res = export_run(run_dir, out, options)
    if ort:  # the ONNX bundle stays (the analytic floor reads its graph); the probes run its ORT-format copy
        res = export_run(out, f"{out}_ort", ExportOptions(ort_format=True, profile_modes=options.profile_modes))
    return {"export_s": round(time.perf_counter() - t0, 1), "params": res.manifest.params}


# ---------------------------------------------------------------------------------------------------------------
# the analytic floor


def _const_derived(graph) -> set[str]:
    """Names of tensors computable from initializers and Constant nodes alone (weights after constant folding)."""
    known = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all((not x) or x in known for x in node.input)):
            known.update(o for o in node.output if o)
    return known


def _tensor_bytes(vi) -> int | None:
    import onnx

    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    n = 1
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        n *= d.dim_value
    return n * onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize


def live_activation_peak(onnx_path: str | Path, batch: int = 1) -> dict:
    """Largest sum of simultaneously live activation tensors (bytes) over the graph's topological order, batch 1."""
    import onnx

    model = onnx.load(str(onnx_path))
    g = model.graph
    for inp in list(g.input) + list(g.output):
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
                d.dim_value = batch
    del g.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    sizes: dict[str, int] = {}
    unknown = []
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        b = _tensor_bytes(vi)
        if b is not None:
            sizes[vi.name] = b
    weights = _const_derived(inferred)
    init_bytes = sum(int(np_bytes(t)) for t in inferred.initializer)
    last_use: dict[str, int] = {}
    for i, node in enumerate(inferred.node):
        for x in node.input:
            if x:
                last_use[x] = i
    outputs = {o.name for o in inferred.output}
    live: dict[str, int] = {}
    for inp in inferred.input:
        if inp.name not in weights:
            live[inp.name] = sizes.get(inp.name, 0)
    peak, peak_node = sum(live.values()), None
    for i, node in enumerate(inferred.node):
        for o in node.output:
            if o and o not in weights:
                if o not in sizes:
                    unknown.append(o)
                live[o] = sizes.get(o, 0)
        cur = sum(live.values())
        if cur > peak:
            peak, peak_node = cur, f"{node.op_type}:{node.name}"
        for x in set(node.input) | set(node.output):
            if x in live and last_use.get(x, -1) <= i and x not in outputs:
                del live[x]
    return {"activation_peak_bytes": int(peak), "peak_node": peak_node, "initializer_bytes": int(init_bytes),
            "unknown_shapes": len(unknown), "nodes": len(inferred.node)}


def np_bytes(t) -> int:
    import onnx

    n = 1
    for d in t.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def floor_mb(baseline_mb: float, graph: dict, resolution: int, channels: int = 3) -> float:
    images = 2 * channels * resolution * resolution * 4
    return baseline_mb + (graph["initializer_bytes"] + images + graph["activation_peak_bytes"]) / MIB


# ---------------------------------------------------------------------------------------------------------------
# plot and summary


def summarize(rows: list[dict]) -> dict:
    """The issue's goals at 512 px, computed from the rows (whatever they show)."""
    out: dict = {}
    diff = {r["resolution"]: r for r in rows if r["tool"] == "diffusers" and "error" not in r}
    ed = [r for r in rows if r["tool"] == "edgediff" and "error" not in r and r.get("budget") == "floor"]
    for res in sorted({r["resolution"] for r in ed}):
        d = diff.get(res)
        at = [r for r in ed if r["resolution"] == res]
        if not at:
            continue
        best = min(at, key=lambda r: r["peak_mb"])
        s = {"lowest_peak": {k: best[k] for k in ("grid", "precision", "peak_mb", "floor_mb", "measured_over_floor")}}
        if d:
            s["diffusers_peak_mb"] = d["peak_mb"]
            s["peak_ratio_lowest_vs_diffusers"] = round(best["peak_mb"] / d["peak_mb"], 4)
            fp = [r for r in at if r["precision"] == "fp32" and r.get("s_per_step")]
            if fp:
                fastest = min(fp, key=lambda r: r["s_per_step"])
                s["fastest_fp32"] = {k: fastest[k] for k in ("grid", "s_per_step", "peak_mb")}
                s["time_ratio_fastest_fp32_vs_diffusers"] = round(fastest["s_per_step"] / d["s_per_step"], 3)
        out[str(res)] = s
    for r in ed:  # the halo cells' cost against diffusers (benchmarks/seams.py joins these rows)
        d = diff.get(r["resolution"])
        if d and r.get("s_per_step") and r.get("halo", 0) > 0:
            out.setdefault(f"{r['resolution']}_halo", {})[f"grid{r['grid']}_halo{r['halo']}_{r['precision']}"] = {
                "peak_mb": r["peak_mb"], "peak_ratio_vs_diffusers": round(r["peak_mb"] / d["peak_mb"], 4),
                "s_per_step": r["s_per_step"], "time_ratio_vs_diffusers": round(r["s_per_step"] / d["s_per_step"], 3)}
    auto = [r for r in rows if r["tool"] == "edgediff" and r.get("budget") == "none" and "error" not in r]
    for r in auto:
        d = diff.get(r["resolution"])
        if d and r.get("s_per_step"):
            out.setdefault(f"{r['resolution']}_no_budget", {})[f"grid{r['grid']}_{r['precision']}"] = {
                "peak_mb": r["peak_mb"], "s_per_step": r["s_per_step"],
                "time_ratio_vs_diffusers": round(r["s_per_step"] / d["s_per_step"], 3)}
    return out


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in body["rows"] if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    markers = {1: "o", 2: "s", 4: "^", 8: "D"}
    for prec, ls in (("fp32", "-"), ("int8", ":")):
        for g in sorted({r["grid"] for r in rows if r["tool"] == "edgediff"}):
            pts = sorted((r["resolution"], r["peak_mb"], r["s_per_step"]) for r in rows if r["tool"] == "edgediff"
                         and r["grid"] == g and r["precision"] == prec and r.get("budget") == "floor")
            if pts:
                label = f"edgediff {prec} grid {g}" + (" (full image)" if g == 1 else "")
                axes[0].plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=markers.get(g, "x"), label=label)
                axes[1].plot([p[0] for p in pts], [p[2] for p in pts], ls, marker=markers.get(g, "x"), label=label)
    pts = sorted((r["resolution"], r["peak_mb"], r["s_per_step"]) for r in rows if r["tool"] == "diffusers")
    if pts:
        for ax, k in ((axes[0], 1), (axes[1], 2)):
            ax.plot([p[0] for p in pts], [p[k] for p in pts], "k-", lw=2.5, marker="*", ms=10,
                    label="diffusers UNet2DModel (torch)")
    fl = sorted({(r["resolution"], r["floor_mb"]) for r in rows if r["tool"] == "edgediff" and r["grid"] == 8
                 and r["precision"] == "fp32" and r.get("floor_mb")})
    if fl:
        axes[0].plot([p[0] for p in fl], [p[1] for p in fl], color="grey", ls="--", label="analytic floor, fp32 grid 8")
    for ax, title in ((axes[0], "process peak RSS (MiB, log)"), (axes[1], "seconds per DDIM step (log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([64, 128, 256, 512])
        ax.set_xticklabels(["64", "128", "256", "512"])
        ax.set_xlabel("resolution (px)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6.5, ncol=2)
    params = body.get("params", {})
    steps = sorted({r.get("steps", STEPS) for r in rows})
    fig.suptitle(f"batch 1, {'/'.join(map(str, steps))} DDIM steps (per row in the JSON), each configuration a fresh process; edgediff "
                 f"{params.get('edgediff_full_image', '?')} params vs diffusers {params.get('diffusers', '?')}; "
                 "edgediff at the smallest budget its planner accepts", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ---------------------------------------------------------------------------------------------------------------
# driver


def markdown(body: dict) -> str:
    """The README's headline table: per resolution, diffusers vs edgediff's full image (grid 1) and its leanest grid."""
    rows = [r for r in body["rows"] if "error" not in r]
    diff = {r["resolution"]: r for r in rows if r["tool"] == "diffusers"}
    ed = [r for r in rows if r["tool"] == "edgediff" and r.get("budget") == "floor"]
    out = ["| px | tool | grid | precision | peak MiB | floor MiB | peak / floor | s / step | params |",
           "|---|---|---|---|---|---|---|---|---|"]
    for res in sorted({r["resolution"] for r in rows}):
        d = diff.get(res)
        if d:
            out.append(f"| {res} | diffusers (torch) | 1 | fp32 | {d['peak_mb']:.0f} | | | {d['s_per_step']:.2f} | "
                       f"{d['params'] / 1e6:.2f}M |")
        for r in sorted((r for r in ed if r["resolution"] == res), key=lambda r: (r["grid"], r["precision"])):
            out.append(f"| {res} | edgediff | {r['grid']} | {r['precision']} | {r['peak_mb']:.0f} | {r['floor_mb']:.0f} | "
                       f"{r['measured_over_floor']:.2f} | {r['s_per_step']:.2f} | {r['params'] / 1e6:.2f}M |")
    return "\n".join(out)


def row_key(r: dict) -> tuple:
    return (r["tool"], r["resolution"], r["grid"], r["precision"], r.get("budget"))


def combine(paths: list[Path], name: str) -> int:
    """One result file from parts measured at different times (each part keeps its own machine record)."""
    rows: dict[tuple, dict] = {}
    parts = []
    body: dict = {}
    for p in paths:
        part = json.loads(p.read_text())
        body = body or dict(part)
        parts.append({"file": p.name, "machine": part.get("machine"), "machine_end": part.get("machine_end"),
                      "rows": len(part.get("rows", [])), "settings": part.get("settings")})
        body.setdefault("params", {}).update(part.get("params", {}))
        for r in part.get("rows", []):
            r = dict(r, measured_in=p.name)
            rows[row_key(r)] = r
    body["rows"] = sorted(rows.values(), key=lambda r: (r["tool"] != "diffusers", r["resolution"], r["grid"],
                                                        r["precision"], r.get("budget") or ""))
    body["parts"] = parts
    body["machine"] = machine_info()
    body["summary"] = summarize(body["rows"])
    write_json(name, body)
    plot(body, RESULTS / name.replace(".json", ".png"))
    print(f"wrote {RESULTS / name} ({len(body['rows'])} rows from {len(paths)} parts)")
    return 0


def parity_rows(work: Path) -> dict:
    """The exporter's own torch-vs-onnxruntime check (manifest quality.parity_fp32) of every benchmark bundle: how
    far fp32 rounding goes as cells grow, the evidence behind export's size-aware parity bound."""
    from edgediff.bundle import read_manifest

    rows = []
    for bundle in sorted(work.glob("bundle_*_g*")):
        if (bundle / "manifest.json").is_file():
            m = read_manifest(bundle)
            rows.append({"resolution": m.image_size, "grid": m.grid, "cell_px": m.patch_size,
                         **(m.quality.parity_fp32 or {})})
    rows.sort(key=lambda r: (r["resolution"], r["grid"]))
    return {"benchmark": "export_parity", "machine": machine_info(),
            "how": "read from the manifests of the peak_memory bundles (untrained default-width UNets), as written by "
                   "edgediff export: max |ORT - torch| over real inputs and the bound it was held to",
            "rows": rows}


def load_existing(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="diffusers,edgediff", help="comma list of diffusers, edgediff")
    ap.add_argument("--workdir", default=None, help="run dirs and bundles (reused); default /tmp/edgediff_peak[_quick]")
    ap.add_argument("--resolutions", default=None, help="override, e.g. 256,512")
    ap.add_argument("--grids", default=None, help="override, e.g. 1,8")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / onnxruntime threads for both tools (1: the shared cores make 2 threads erratic)")
    ap.add_argument("--precisions", default=None, help="override, e.g. fp32")
    ap.add_argument("--halos", default="0", help="halo widths of the edgediff cells (px), e.g. 0,4")
    ap.add_argument("--merge", action="store_true", help="keep rows of other configurations from the existing JSON")
    ap.add_argument("--json", default=None, help="result file name under benchmarks/results (default peak_memory.json)")
    ap.add_argument("--combine", default=None,
                    help="comma list of result JSONs measured separately (e.g. late re-timings): rows of later files "
                         "replace the same configuration in earlier ones; writes --json and the plot")
    ap.add_argument("--steps", type=int, default=STEPS, help="DDIM steps per run (the issue's figure is 20)")
    ap.add_argument("--table", action="store_true", help="print the README table from the existing result JSON")
    ap.add_argument("--parity", action="store_true",
                    help="write export_parity.json: the exporter's fp32 parity check of every bundle in --workdir")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one measurement in this process
    ap.add_argument("--bundle", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--budget-mb", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--resolution", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ort", action="store_true", help="export the benchmark bundles in ORT format (export --ort)")
    ap.add_argument("--lean-profile", action="store_true",
                    help="export bundles with the lean-mode memory profile only (faster; the planner then plans lean)")
    a = ap.parse_args(argv)
    if a.probe == "diffusers":
        emit(probe_diffusers(a.resolution, a.steps, a.threads))
        return 0
    if a.probe == "floor":
        emit(probe_floor(a.bundle, a.precision, a.steps, a.threads))
        return 0
    if a.probe == "edgediff":
        emit(probe_edgediff(a.bundle, a.precision, a.steps, a.budget_mb, a.threads))
        return 0
    if a.probe == "export":
        emit(export_bench_bundle(a.run, a.bundle, a.int8, a.lean_profile, a.ort))
        return 0

    s = dict(QUICK if a.quick else FULL)
    if a.resolutions:
        s["resolutions"] = [int(x) for x in a.resolutions.split(",")]
    if a.grids:
        s["grids"] = [int(x) for x in a.grids.split(",")]
    if a.precisions:
        s["precisions"] = a.precisions.split(",")
    only = set(a.only.split(","))
    halos = [int(x) for x in a.halos.split(",")]
    name = a.json or ("peak_memory.quick.json" if a.quick else JSON_NAME)
    if a.combine:
        return combine([Path(p) for p in a.combine.split(",")], name)
    if a.table:
        print(markdown(json.loads((RESULTS / name).read_text())))
        return 0
    work = Path(a.workdir or ("/tmp/edgediff_peak_quick" if a.quick else "/tmp/edgediff_peak"))
    if a.parity:
        write_json("export_parity.json", parity_rows(work))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    from edgediff.models import ModelConfig, build_model, count_params

    full_params = count_params(build_model(ModelConfig(image_size=64, grid=1, **WIDTHS)))
    prev = load_existing(name) if a.merge else None
    body = {
        "benchmark": "peak_memory", "quick": a.quick, "machine": machine_info(),
        "note": SHARED_CPU_NOTE + " Memory is unaffected by the load; s_per_step is the mean over the 20 steps of "
                "one run (s_per_step_min the fastest step) and may be inflated by other jobs on the cores. MB = MiB.",
        "settings": {"steps": a.steps, "batch": 1, "threads": a.threads, "n_images": 1, "seed": 0, "edgediff_widths": {**WIDTHS, "mults": list(WIDTHS["mults"])},
                     "diffusers_unet": {k: list(v) if isinstance(v, tuple) else v for k, v in DIFFUSERS_UNET.items()},
                     "edgediff_command": "edgediff sample BUNDLE --n 1 --steps 20 --seed 0 --precision P "
                                         "--memory-budget <planner floor + 1 MiB> (budget 'floor'; if the run fails at that budget, "
                                         "1.1x, 1.25x, 1.5x are tried and every attempt recorded); no --memory-budget "
                                         "(budget 'none')",
                     "bundles": "untrained model (zero-initialised convs given N(0, 0.02) weights), no memory bank, "
                                f"int8 calibrated on timesteps {list(CALIB_TIMESTEPS)} × every cell",
                     "floor": "baseline RSS (this run) + ONNX initializer bytes + 2 image buffers + peak live "
                              "activations of one cell at batch 1 (onnx.shape_inference + liveness)",
                     **s},
        "params": {"edgediff_full_image": full_params}, "rows": [],
    }
    if prev:
        body["rows"] = [r for r in prev.get("rows", []) if not (
            r["resolution"] in s["resolutions"] and r["tool"] in only
            and (r["tool"] == "diffusers" or (r["grid"] in s["grids"] and r.get("halo", 0) in halos)))]
        body["params"].update(prev.get("params", {}))

    def save():
        body["summary"] = summarize(body["rows"])
        write_json(name, body)

    if "diffusers" in only:
        for res in s["resolutions"]:
            try:
                row = run_probe(["--probe", "diffusers", "--resolution", str(res), "--threads", str(a.threads),
                                 "--steps", str(a.steps)])
                body["params"]["diffusers"] = row["params"]
                row["params_vs_edgediff"] = round(row["params"] / full_params - 1, 4)
                row["load_average"] = list(os.getloadavg())
            except Exception as e:  # a failed configuration is a result too: record it and go on
                row = {"tool": "diffusers", "resolution": res, "grid": 1, "precision": "fp32", "error": str(e)[-400:]}
            print(f"diffusers {res:4d} px: peak {row.get('peak_mb')} MiB, {row.get('s_per_step')} s/step", flush=True)
            body["rows"].append(row)
            save()

    if "edgediff" in only:
        data = make_data_folder(work)
        graphs: dict[tuple, dict] = {}
        for res in s["resolutions"]:
            for g, halo in [(g, h) for g in s["grids"] for h in halos if not (h and g == 1)]:
                side = res // g + 2 * halo
                if res // g < 4 or side % 4:
                    continue
                tag = f"{res}_g{g}" + (f"_h{halo}" if halo else "")
                run_dir, bundle = work / f"run_{tag}", work / f"bundle_{tag}"
                params = make_untrained_run(run_dir, res, g, data, halo)
                export_info = {}
                probe_bundle = Path(f"{bundle}_ort") if a.ort else bundle  # what the probes sample from
                if not (probe_bundle / "manifest.json").is_file():
                    try:
                        export_info = run_probe(["--probe", "export", "--run", str(run_dir), "--bundle", str(bundle),
                                                 "--int8"] + (["--lean-profile"] if a.lean_profile else [])
                                                + (["--ort"] if a.ort else []),
                                                timeout=5400)
                        export_info["profile_modes"] = "lean" if a.lean_profile else "lean,fast"
                    except Exception as e:
                        for prec in s["precisions"]:
                            body["rows"].append({"tool": "edgediff", "resolution": res, "grid": g, "precision": prec,
                                                 "params": params, "error": f"export: {str(e)[-400:]}"})
                        save()
                        continue
                from edgediff.bundle import read_manifest

                m = read_manifest(probe_bundle)
                for prec in s["precisions"]:
                    role = {"fp32": "denoiser_fp32", "int8": "denoiser_int8"}[prec]
                    path = bundle / read_manifest(bundle).files[role].path  # the ONNX graph: the floor's source
                    if (res, g, halo, prec) not in graphs:
                        graphs[(res, g, halo, prec)] = live_activation_peak(path)
                    graph = graphs[(res, g, halo, prec)]
                    budgets = ["floor"] + (["none"] if res in s["auto_at"] else [])
                    for budget in budgets:
                        row = {"tool": "edgediff", "resolution": res, "grid": g, "halo": halo, "precision": prec,
                               "budget": budget, "steps": a.steps,
                               "patch": res // g, "params": params, "model_file_mb": round(m.files[role].bytes / MIB, 2),
                               "model_format": Path(m.files[role].path).suffix.lstrip("."),
                               **export_info}
                        try:
                            bmb = None
                            if budget == "floor":
                                fl = run_probe(["--probe", "floor", "--bundle", str(probe_bundle), "--precision", prec,
                                                "--threads", str(a.threads), "--steps", str(a.steps)])
                                row["planner_floor_mb"] = fl["planner_floor_mb"]
                                bmb = fl["planner_floor_mb"] + 1.0
                            attempts = []
                            # the planner's floor is an estimate: when the capped arena refuses at that budget the
                            # row records it and retries with more (the first budget that worked is the row's)
                            for factor in ((1.0, 1.1, 1.25, 1.5) if bmb is not None else (1.0,)):
                                b = None if bmb is None else round(bmb * factor, 1)
                                r = run_probe(["--probe", "edgediff", "--bundle", str(probe_bundle), "--precision", prec,
                                               "--threads", str(a.threads), "--steps", str(a.steps)]
                                              + (["--budget-mb", str(b)] if b else []))
                                if b is not None:
                                    attempts.append({"budget_mb": b, "exit_code": r["exit_code"],
                                                     "peak_mb": r["peak_mb"], "message": r["cli_output"][-240:]
                                                     if r["exit_code"] else None})
                                if not r["exit_code"]:
                                    break
                            row["budget_mb"] = b
                            row["budget_attempts"] = attempts
                            row["refused_at_planner_floor"] = bool(attempts and attempts[0]["exit_code"])
                            row.update(r)
                            row["load_average"] = list(os.getloadavg())
                            row["graph"] = graph
                            row["weights_mb"] = round(graph["initializer_bytes"] / MIB, 2)
                            row["live_activations_mb"] = round(graph["activation_peak_bytes"] / MIB, 2)
                            row["image_buffers_mb"] = round(2 * 3 * res * res * 4 / MIB, 2)
                            row["floor_mb"] = round(floor_mb(r["baseline_mb"], graph, res), 1)
                            row["measured_over_floor"] = round(r["peak_mb"] / row["floor_mb"], 3)
                            if r.get("exit_code"):
                                row["error"] = f"edgediff sample exited {r['exit_code']}: {r.get('cli_output', '')[-300:]}"
                        except Exception as e:
                            row["error"] = str(e)[-400:]
                        print(f"edgediff {res:4d} px grid {g} {prec} budget {budget}: peak {row.get('peak_mb')} MiB "
                              f"(floor {row.get('floor_mb')}), {row.get('s_per_step')} s/step"
                              + (f"  ERROR {row['error'][:200]}" if "error" in row else ""), flush=True)
                        body["rows"].append(row)
                        save()
    body["machine_end"] = machine_info()
    save()
    plot(body, RESULTS / name.replace(".json", ".png"))
    print(f"wrote {RESULTS / name} ({len(body['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
