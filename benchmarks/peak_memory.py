"""Peak memory and speed of `edgediff sample` against diffusers on torch, at equal parameter count, and the floor.

Every configuration runs in its own fresh Python process (a process that already ran another model carries its
heap and arena with it), and memory is the kernel's own accounting: VmRSS and VmHWM from /proc/self/status.

edgediff rows: the real `edgediff sample BUNDLE --n 1 --steps 20 --precision P --memory-budget B` command line,
run in-process by the probe (edgediff.runtime.sample_files.sample_to_files, what the command runs once its options are parsed), for
resolutions 64, 128, 256, 512, grids 1 (the full-image baseline, same code path), 2, 4, 8 and fp32 / int8. B is the
planner's own floor for that bundle (+1 MiB), asked for first in a separate process: so each row is "the smallest
budget edgediff accepts", and the planner then picks its lean plan. The probe only observes: it reads the figures
the runtime reports of itself (SampleResult.phases: RSS right after loading, load time, each step's time, the
sampling phase's own peak). Bundles are exported by the project's exporter from an untrained model of
the benchmark widths (peak_setup.py: memory and speed do not depend on training).

diffusers rows: `UNet2DModel` (conv only: DownBlock2D/UpBlock2D, no mid attention, scale-shift time conditioning,
which is what edgediff's ResBlocks do) with widths chosen so its parameter count is within 5% of edgediff's
full-image model, + `DDIMScheduler`, 20 steps, batch 1, torch CPU, under `torch.inference_mode()`.

The analytic floor of an edgediff configuration (peak_floor.py): baseline RSS + the ONNX file's initializers + two
image buffers + the largest set of simultaneously live activations of one cell at batch 1. The summary, figure,
README table and combining of parts are in peak_report.py; this file holds the probes (each run in a fresh process
through benchmarks.common.run_fresh) and the driver.

    python -m benchmarks.peak_memory            # full: ≈ 40-60 min on 2 shared cores (exports 16 bundles)
    python -m benchmarks.peak_memory --quick    # 64 and 128 px, grids 1 and 2: a few minutes
    python -m benchmarks.peak_memory --only diffusers   # or: edgediff, floor
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, emit, machine_info, run_fresh, write_json
from benchmarks.peak_floor import floor_mb, live_activation_peak
from benchmarks.peak_report import combine, load_existing, markdown, parity_rows, plot, summarize
from benchmarks.peak_setup import (CALIB_TIMESTEPS, STEPS, WIDTHS, export_bench_bundle, make_data_folder,
                                   make_untrained_run)
from edgediff.runtime import rss  # stdlib only, so the interpreter baseline stays torch- and numpy-free
from edgediff.units import MIB

FULL = dict(resolutions=[64, 128, 256, 512], grids=[1, 2, 4, 8], precisions=["fp32", "int8"], auto_at=[512])
QUICK = dict(resolutions=[64, 128], grids=[1, 2], precisions=["fp32", "int8"], auto_at=[])
# diffusers widths matched to WIDTHS (parameter counts are compared and recorded in every row)
DIFFUSERS_UNET = dict(block_out_channels=(64, 128, 128), layers_per_block=1, down_block_types=("DownBlock2D",) * 3,
                      up_block_types=("UpBlock2D",) * 3, add_attention=False, resnet_time_scale_shift="scale_shift",
                      norm_num_groups=32, in_channels=3, out_channels=3)
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
    import edgediff.runtime.sample_files  # noqa: F401  (as in probe_edgediff)
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
    """Run what `edgediff sample` runs (edgediff.runtime.sample_files.sample_to_files: check the output, plan, sample with the
    progress bar, write the PNG) in this process, and read the phase figures the runtime reports of itself
    (SampleResult.phases, with the peak reset after loading so that the sampling phase's peak is its own)."""
    import contextlib
    import io

    import edgediff.cli  # noqa: F401  (the command's imports are part of its process)
    from edgediff.errors import EdgediffError
    from edgediff.runtime.sample_files import sample_to_files
    from edgediff.runtime.sampler import Phases, SampleRequest
    from edgediff.units import parse_size

    base = rss.current_mb()  # interpreter + numpy + onnxruntime + pillow + typer + edgediff: the CLI's baseline
    out = Path(tempfile.mkdtemp(prefix="edgediff-bench-")) / "sample.png"
    budget = None if budget_mb is None else parse_size(f"{budget_mb:.1f}MiB")  # as --memory-budget spells it
    request = SampleRequest(n=1, steps=steps, seed=0, precision=precision, threads=threads, memory_budget=budget,
                            phase_peaks=True)
    text = io.StringIO()
    code, result = 0, None
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        try:
            result = sample_to_files(Path(bundle), request, out, None, log=print)
        except EdgediffError as e:  # what the command line would print, with its exit code
            print(f"error: {e}")
            code = 2
    ph = result.phases if result is not None else Phases()
    peak = max(ph.load_peak_mb, rss.peak_mb()) if result is not None else rss.peak_mb()
    times = ph.step_s
    plan_line = next((ln for ln in text.getvalue().splitlines() if ln.startswith("plan:")), None)
    return {
        "exit_code": code, "baseline_mb": round(base, 1), "before_load_mb": round(ph.before_load_mb, 1),
        "after_load_mb": round(ph.after_load_mb, 1), "peak_mb": round(peak, 1),
        "load_peak_mb": round(ph.load_peak_mb, 1),
        "activation_mb": round(ph.sampling_peak_mb - ph.after_load_mb, 1),
        "s_per_step": round(sum(times) / len(times), 4) if times else None,
        "s_per_step_min": round(min(times), 4) if times else None, "total_s": round(sum(times), 2),
        "load_s": round(ph.load_s, 3), "session_settings": result.plan.settings.to_dict() if result else None,
        "plan": plan_line, "peak_reset_worked": ph.peak_reset if result else None,
        "cli_output": text.getvalue()[-600:], "wrote_png": out.is_file(),
    }


def run_probe(args: list[str], timeout: float = 3600) -> dict:
    """`python -m benchmarks.peak_memory --probe ...` in a fresh process; its result parsed back."""
    return run_fresh("benchmarks.peak_memory", args, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# driver


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
