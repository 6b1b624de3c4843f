"""Does patch-by-patch generation keep quality? FD-Lite0, KID and seam score at equal training steps.

Trains small UNets with the project's own loop (edgediff.train.train) on emoji at 32 px, identical in every setting
(seed, widths, batch, learning rate, steps) except the grid (1 = the full-image baseline, 2, 4) and, for one extra
run, the memory bank (grid 2, --no-memory). Each run is exported with the project's exporter (fp32 ONNX after its
parity check, static QDQ int8, the PQ lookup table), then sampled through onnxruntime with the shared numpy DDIM
loop (edgediff.sampling.sample_loop) and the runtime's session settings. What varies between rows of one run:

- precision: the fp32 or the int8 denoiser of the bundle;
- bank: "lut" = snippets decoded from the bundle's lookup table exactly as `edgediff sample` does
  (edgediff.runtime.conditions.choose_snippets); "float" = the same bank entries (same seeded indices) taken from the
  run's float bank; "none" = the run trained without a bank, sampled with the null snippet.

Every row uses the same initial noise (seed) and the same bank indices, so rows of one run differ only in what the
row names. Scores come from edgediff.metrics (FD-Lite0, KID in EfficientNet-Lite0 space, seam score); the real
images' own seam score at the same grid is recorded as the value a perfect generator would get.

    python -m benchmarks.quality            # ≈ 30-45 min of CPU on 2 shared cores (background it)
    python -m benchmarks.quality --quick    # a few minutes: tiny models, for checking the machinery

Runs and bundles live in --workdir and are reused (training resumes), so an interrupted run continues where it
stopped; the JSON is rewritten after every scored row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, write_json, save_figure

FULL = dict(grids=[1, 2, 4], steps=200, dim=32, mults=[1, 2, 2], batch_size=32, lr=5e-4, ema_decay=0.995,
            n_samples=128, sampler_steps=20, int8=True, matrix="core", guidance=3.0)
QUICK = dict(grids=[1, 2], steps=40, dim=16, mults=[1, 2], batch_size=16, lr=5e-4, ema_decay=0.9,
             n_samples=32, sampler_steps=5, int8=True, matrix="core", guidance=3.0)
IMAGE_SIZE = 32
DATA = "emoji"
SEED = 0
JSON_NAME = "quality.json"


# ---------------------------------------------------------------------------------------------------------------
# training and export (the project's own functions; this file only chooses the settings)


def _cmd_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def train_cmd(run_dir: Path, grid: int, memory: bool, s: dict) -> list[str] | None:
    """The `edgediff train` command line of one run (None when it is already trained to s['steps'])."""
    from edgediff.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir) if run_dir.exists() else None
    if found is not None and int(found[1]["step"]) >= s["steps"]:
        return None
    cmd = ["edgediff", "train", "--data", DATA, "--image-size", str(IMAGE_SIZE), "--grid", str(grid),
           "--steps", str(s["steps"]), "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]),
           "--ema-decay", str(s["ema_decay"]), "--seed", str(SEED), "--dim", str(s["dim"]),
           "--mults", ",".join(str(m) for m in s["mults"]), "--sample-every", "0",
           "--checkpoint-every", str(max(50, s["steps"] // 4)), "--out", str(run_dir)]
    if not memory:
        cmd.append("--no-memory")
    if found is not None:
        cmd.append("--resume")
    return cmd


def export_cmd(run_dir: Path, bundle: Path, int8: bool) -> list[str] | None:
    """`edgediff export RUN_DIR --out BUNDLE [--int8] --no-profile` (None when the bundle is up to date)."""
    from edgediff.bundle import read_manifest

    if (bundle / "manifest.json").is_file():
        m = read_manifest(bundle)
        if m.training.get("step") == _run_step(run_dir) and (not int8 or "denoiser_int8" in m.files):
            return None
    return ["edgediff", "export", str(run_dir), "--out", str(bundle), "--no-profile"] + (["--int8"] if int8 else [])


def run_parallel(jobs: dict[str, list[str] | None], workdir: Path, threads: int, phase: str, log) -> dict:
    """Run the commands side by side (each single-threaded: the shared cores are time-sliced anyway, and parallel
    processes finish the fixed CPU budget sooner in wall time); returns wall seconds per job. Raises on failure."""
    procs, t0, walls = {}, time.perf_counter(), {}
    for name, cmd in jobs.items():
        if cmd is None:
            log(f"{phase} {name}: up to date")
            continue
        logf = open(workdir / f"{phase}_{name}.log", "w")
        log(f"{phase} {name}: {' '.join(cmd)}")
        procs[name] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=_cmd_env(threads)), logf)
    for name, (p, logf) in procs.items():
        code = p.wait()
        logf.close()
        walls[name] = round(time.perf_counter() - t0, 1)
        if code:
            tail = (workdir / f"{phase}_{name}.log").read_text()[-600:]
            raise RuntimeError(f"{phase} {name} failed (exit {code}): {tail}")
        log(f"{phase} {name}: done after {walls[name]} s")
    return walls


def _run_step(run_dir: Path) -> int:
    from edgediff.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir)
    return int(found[1]["step"]) if found else 0


# ---------------------------------------------------------------------------------------------------------------
# sampling through onnxruntime


def snippets_for(bank: str, run_dir: Path, bundle: Path, manifest, n: int, seed: int) -> np.ndarray:
    """The [n, S] conditions of a row; "lut" and "float" draw the same bank indices (snippets.choose, same seed)."""
    from edgediff.runtime.conditions import choose_snippets
    from edgediff.snippets import choose

    if bank == "lut" or bank == "none":
        return choose_snippets(bundle, manifest, n, seed, None, None)  # zeros for a bundle without a bank
    from edgediff.memory_bank import load_run_bank

    float_bank = load_run_bank(run_dir)
    return np.ascontiguousarray(choose(float_bank, n, seed=seed), dtype=np.float32)


def sample_onnx(bundle: Path, manifest, precision: str, snippets: np.ndarray, n: int, steps: int, seed: int,
                threads: int, guidance: float = 1.0) -> np.ndarray:
    """n uint8 images [n, H, W, 3] from the bundle's `precision` denoiser, the runtime's lean session settings."""
    from edgediff.bundle import resolve
    from edgediff.images import to_uint8
    from edgediff.bundle import ROLE
    from edgediff.runtime.sampler import onnx_eps_fn
    from edgediff.runtime.session import MODES, create_session
    from edgediff.sampling import sample_loop

    session = create_session(resolve(bundle, manifest.files[ROLE[precision]]), MODES["lean"].with_(threads=threads))
    eps_fn = onnx_eps_fn(session, manifest)
    schedule = manifest.schedule
    cells = manifest.grid * manifest.grid
    x = sample_loop(eps_fn, geom=manifest.geometry, n=n, steps=steps, seed=seed, snippets=snippets,
                    cells_per_call=min(n * cells, 256), schedule=schedule, guidance=guidance)
    return to_uint8(x)


# ---------------------------------------------------------------------------------------------------------------
# the benchmark


def plan_rows(s: dict) -> list[dict]:
    """(run, grid, memory, precision, bank) for every row; the grid-2 run without memory gives the "none" rows.

    matrix "core" (default): every grid at fp32 + LUT (the device path), and at grid 2 also int8 + LUT, fp32 + float
    bank and the run without a bank: each comparison of the issue once, at the grid the paper's claim is about.
    matrix "all": every grid × precision × bank. With s["guidance"] (memory-bank guidance, edgediff.sampling.guided)
    every grid also gets an fp32 + LUT row sampled at that scale: the device default of a bundle that records it.
    """
    rows = []
    precisions = ["fp32", "int8"] if s["int8"] else ["fp32"]
    g2 = 2 if 2 in s["grids"] else s["grids"][-1]
    for g in s["grids"]:
        for p in precisions:
            for b in ("lut", "float"):
                if s.get("matrix", "core") == "all" or (p, b) == ("fp32", "lut") or g == g2:
                    if s.get("matrix", "core") != "all" and g == g2 and (p, b) == ("int8", "float"):
                        continue
                    rows.append(dict(run=f"g{g}_mem", grid=g, memory=True, precision=p, bank=b))
    for p in precisions if s.get("matrix", "core") == "all" else ["fp32"]:
        rows.append(dict(run=f"g{g2}_nomem", grid=g2, memory=False, precision=p, bank="none"))
    for r in rows:
        r["guidance"] = 1.0
    if s.get("guidance", 1.0) != 1.0:
        rows += [dict(run=f"g{g}_mem", grid=g, memory=True, precision="fp32", bank="lut", guidance=float(s["guidance"]))
                 for g in s["grids"]]
    return rows


def row_key(r: dict) -> tuple:
    """What tells two rows of one run apart."""
    return r["precision"], r["bank"], float(r.get("guidance", 1.0))


def summarize(rows: list[dict]) -> dict:
    """FD ratios against the full-image model (same precision and bank) and the issue's goals, as measured."""
    base = {row_key(r): r for r in rows if r["grid"] == 1}
    out = {}
    for r in rows:
        b = base.get(row_key(r))
        if r["grid"] != 1 and b is not None and b.get("fd_lite0"):
            r["fd_vs_full"] = round(r["fd_lite0"] / b["fd_lite0"], 3)
    for g in sorted({float(r.get("guidance", 1.0)) for r in rows}):
        main = [r for r in rows if row_key(r) == ("fp32", "lut", g) and r["grid"] in (2, 4)]
        suffix = "" if g == 1.0 else f"_guidance{g:g}"
        if main:
            out["goal_fd_within_10pct" + suffix] = {f"grid{r['grid']}": r.get("fd_vs_full") for r in main}
            out["goal_seam_le_1.2" + suffix] = {f"grid{r['grid']}": r.get("seam") for r in main}
    return out


def markdown(body: dict) -> str:
    """The README's table of every row."""
    out = ["| grid | precision | bank | guidance | train steps | FD-Lite0 | vs grid 1 | KID | seam (real) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in body["rows"]:
        seam = "–" if r["seam"] is None else f"{r['seam']:.3f} ({r['seam_real']:.3f})"
        ratio = f"{r['fd_vs_full']:.2f}×" if r.get("fd_vs_full") else ""
        out.append(f"| {r['grid']} | {r['precision']} | {r['bank']} | {r.get('guidance', 1.0):g} | {r['steps']} | "
                   f"{r['fd_lite0']:.2f} | {ratio} | "
                   f"{r['kid']:.4f} ± {r['kid_std']:.4f} | {seam} |")
    return "\n".join(out)


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = body["rows"]
    labels = [f"g{r['grid']} {r['precision']}\n{r['bank']}" + ("" if r.get("guidance", 1.0) == 1.0 else
              f" w{r['guidance']:g}") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = ["#4c72b0" if r["grid"] == 1 else "#dd8452" if r["grid"] == 2 else "#55a868" for r in rows]
    x = np.arange(len(rows))
    axes[0].bar(x, [r["fd_lite0"] for r in rows], color=colors)
    axes[0].set_ylabel("FD-Lite0 (lower is better)")
    axes[1].bar(x, [r["kid"] for r in rows], yerr=[r.get("kid_std", 0) for r in rows], color=colors)
    axes[1].set_ylabel("KID (lower is better)")
    seams = [r["seam"] if r["seam"] is not None and math.isfinite(r["seam"]) else 0.0 for r in rows]
    axes[2].bar(x, seams, color=colors)
    axes[2].axhline(1.2, color="red", ls="--", lw=1, label="goal ≤ 1.2")
    reals = [r.get("seam_real") for r in rows]
    axes[2].scatter(x, [v if v is not None and math.isfinite(v) else np.nan for v in reals], color="k", marker="_",
                    s=200, label="real images", zorder=3)
    axes[2].set_ylabel("seam score (1 = invisible; grid 1 has none)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7, rotation=90)
    s = body["settings"]
    fig.suptitle(f"emoji {IMAGE_SIZE} px, {s['steps']} training steps each, dim {s['dim']}, "
                 f"{s['n_samples']} samples × {s['sampler_steps']} DDIM steps (blue: full image, orange: 2×2, "
                 "green: 4×4)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def score_run(rname: str, s: dict, workdir: Path, threads: int) -> list[dict]:
    """Every row of one run (fresh process per run, so runs score side by side); writes rows_<run>.json."""
    import torch

    from edgediff.bundle import read_manifest
    from edgediff.data import load_dataset
    from edgediff.encoders import dataset_features
    from edgediff.files import atomic_write_bytes
    from edgediff.images import make_grid, save_png
    from edgediff.metrics import evaluate, quality_fields

    torch.set_num_threads(threads)
    dataset = load_dataset(DATA, IMAGE_SIZE)
    real = dataset_features(dataset, progress=False)
    run_dir, bundle = workdir / rname, workdir / f"{rname}_bundle"
    m = read_manifest(bundle)
    rows = []
    for spec in [r for r in plan_rows(s) if r["run"] == rname]:
        t0 = time.perf_counter()
        sn = snippets_for(spec["bank"], run_dir, bundle, m, s["n_samples"], SEED)
        images = sample_onnx(bundle, m, spec["precision"], sn, s["n_samples"], s["sampler_steps"], SEED, threads,
                             guidance=spec["guidance"])
        sample_s = time.perf_counter() - t0
        scores = evaluate(images, dataset, spec["grid"], real_features=real, seed=SEED)
        rows.append(dict(grid=spec["grid"], precision=spec["precision"], bank=spec["bank"], guidance=spec["guidance"],
                         steps=m.training.get("step"), **quality_fields(scores),
                         seam=None if math.isnan(scores["seam_border"]) else round(scores["seam_border"], 4),
                         seam_real=None if math.isnan(scores["seam_border_real"]) else round(scores["seam_border_real"], 4),
                         n_generated=scores["n_generated"], n_real=scores["n_real"], run=rname, params=m.params,
                         sample_s=round(sample_s, 1)))
        tag = "" if spec["guidance"] == 1.0 else f"_w{spec['guidance']:g}"
        save_png(make_grid(images[:64]), workdir / f"samples_{rname}_{spec['precision']}_{spec['bank']}{tag}.png")
        atomic_write_bytes(workdir / f"rows_{rname}.json", json.dumps(rows, indent=1).encode())
    return rows


def run(s: dict, workdir: Path, threads: int, quick: bool, log=print, note: str | None = None) -> dict:
    from edgediff.bundle import read_manifest

    workdir.mkdir(parents=True, exist_ok=True)
    name = "quality.quick.json" if quick else JSON_NAME
    body = {"benchmark": "quality", "quick": quick, "machine": machine_info(), "note": SHARED_CPU_NOTE +
            " The runs train, export and score side by side as single-threaded processes; train/sample seconds are "
            "wall clock under that load. Scores do not depend on the load." + (f" {note}" if note else ""),
            "settings": dict(s, image_size=IMAGE_SIZE, data=DATA, seed=SEED, threads_per_process=threads,
                             sampler="onnxruntime lean session + edgediff.sampling.sample_loop (DDIM), every row the "
                                     "same initial noise and the same bank indices",
                             metrics="edgediff.metrics.evaluate (FD-Lite0, KID in EfficientNet-Lite0 space; seam score)",
                             commands="edgediff train / edgediff export --int8 --no-profile, see runs.*.train_cmd"),
            "runs": {}, "rows": []}
    runs = {}
    for spec in plan_rows(s):
        runs.setdefault(spec["run"], spec)
    train_jobs = {r: train_cmd(workdir / r, sp["grid"], sp["memory"], s) for r, sp in runs.items()}
    for r, cmd in train_jobs.items():
        body["runs"][r] = {"train_cmd": " ".join(cmd) if cmd else None}
    train_walls = run_parallel(train_jobs, workdir, threads, "train", log)
    export_walls = run_parallel({r: export_cmd(workdir / r, workdir / f"{r}_bundle", s["int8"]) for r in runs},
                                workdir, threads, "export", log)
    here = Path(__file__).resolve().parent.parent
    score_jobs = {r: [sys.executable, "-m", "benchmarks.quality", "--score-run", r, "--workdir", str(workdir),
                      "--threads", str(threads), "--steps", str(s["steps"]), "--n", str(s["n_samples"]),
                      "--matrix", s.get("matrix", "core"), "--guidance", str(s.get("guidance", 1.0))]
                  + (["--quick"] if quick else []) for r in runs}
    cwd = os.getcwd()
    os.chdir(here)
    try:
        score_walls = run_parallel(score_jobs, workdir, threads, "score", log)
    finally:
        os.chdir(cwd)
    for r in runs:
        m = read_manifest(workdir / f"{r}_bundle")
        body["runs"][r].update(params=m.params, trained_steps=m.training.get("step"),
                               train_wall_s=train_walls.get(r), export_wall_s=export_walls.get(r),
                               score_wall_s=score_walls.get(r), quality_at_export=m.quality.to_dict())
    return assemble(body, s, workdir, runs, name, log)


def assemble(body: dict, s: dict, workdir: Path, runs, name: str, log=print) -> dict:
    """Rows of every run's rows_<run>.json in plan order, the summary, the JSON and the plot. Rows a run has not
    scored yet (a time-boxed run collected early with --collect) are listed under "missing_rows"."""
    by_run = {r: json.loads((workdir / f"rows_{r}.json").read_text()) if (workdir / f"rows_{r}.json").is_file()
              else [] for r in runs}
    body["missing_rows"] = []
    for spec in plan_rows(s):  # plan order
        if not any(row_key(row) == row_key(spec) for row in by_run[spec["run"]]):
            body["missing_rows"].append({k: spec[k] for k in ("grid", "precision", "bank", "guidance")})
        for row in by_run[spec["run"]]:
            if row_key(row) == row_key(spec):
                body["rows"].append(row)
                log(f"grid {row['grid']} {row['precision']:4s} bank {row['bank']:5s} w {row.get('guidance', 1.0):g}: "
                    f"FD-Lite0 {row['fd_lite0']:.3f}  "
                    f"KID {row['kid']:.5f}  seam {row['seam']}")
    body["machine_end"] = machine_info()
    body["summary"] = summarize(body["rows"])
    write_json(name, body)
    plot(body, RESULTS / name.replace(".json", ".png"))
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models and few samples: minutes, not results")
    ap.add_argument("--workdir", default=None, help="runs and bundles (default /tmp/edgediff_quality[_quick])")
    ap.add_argument("--threads", type=int, default=1, help="threads per process (the cores are shared)")
    ap.add_argument("--steps", type=int, default=None, help="override the training steps per run")
    ap.add_argument("--n", type=int, default=None, help="override the number of generated images per row")
    ap.add_argument("--matrix", choices=["core", "all"], default=None, help="core: each comparison once (default); "
                    "all: every grid x precision x bank")
    ap.add_argument("--guidance", type=float, default=None,
                    help="memory-bank guidance of the extra fp32+LUT row per grid (default 3; 1 = no extra rows)")
    ap.add_argument("--note", default=None, help="appended to the result JSON's note (e.g. how the runs were trained)")
    ap.add_argument("--table", action="store_true", help="print the README table from the existing result JSON")
    ap.add_argument("--collect", action="store_true", help="write the JSON and plot from the rows scored so far")
    ap.add_argument("--score-run", default=None, help=argparse.SUPPRESS)  # internal: score one run's rows
    a = ap.parse_args(argv)
    s = dict(QUICK if a.quick else FULL)
    if a.steps:
        s["steps"] = a.steps
    if a.n:
        s["n_samples"] = a.n
    if a.matrix:
        s["matrix"] = a.matrix
    if a.guidance is not None:
        s["guidance"] = a.guidance
    workdir = Path(a.workdir or ("/tmp/edgediff_quality_quick" if a.quick else "/tmp/edgediff_quality"))
    if a.table:
        print(markdown(json.loads((RESULTS / ("quality.quick.json" if a.quick else JSON_NAME)).read_text())))
        return 0
    if a.score_run:
        score_run(a.score_run, s, workdir, a.threads)
        return 0
    if a.collect:
        from edgediff.bundle import read_manifest

        name = "quality.quick.json" if a.quick else JSON_NAME
        body = {"benchmark": "quality", "quick": a.quick, "machine": machine_info(),
                "note": SHARED_CPU_NOTE + " Collected with --collect from the scored rows present at that time."
                        + (f" {a.note}" if a.note else ""),
                "settings": dict(s, image_size=IMAGE_SIZE, data=DATA, seed=SEED, threads_per_process=a.threads),
                "runs": {}, "rows": []}
        runs = list(dict.fromkeys(r["run"] for r in plan_rows(s)))
        for r in runs:
            m = read_manifest(workdir / f"{r}_bundle")
            body["runs"][r] = dict(params=m.params, trained_steps=m.training.get("step"),
                                   quality_at_export=m.quality.to_dict())
        assemble(body, s, workdir, runs, name, log=lambda m: print(m, flush=True))
        return 0
    t0 = time.perf_counter()
    body = run(s, workdir, a.threads, a.quick, log=lambda m: print(m, flush=True), note=a.note)
    print(f"wrote {RESULTS / ('quality.quick.json' if a.quick else JSON_NAME)} ({len(body['rows'])} rows) in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
