"""Does `edgediff sample` keep the process under its --memory-budget? A sweep from below the floor to 3× it.

    python -m benchmarks.budget [--quick] [--work DIR]

For a 32 px bundle and a 256 px bundle (untrained weights: memory does not depend on them; each made the real
way, `edgediff train --steps 1` then `edgediff export`, which records the memory profile), it asks the planner for
the floor (the smallest budget it accepts), then runs, each in a fresh process:
  - 8 budgets from the floor to 3× the floor: the plan and the measured peak RSS (VmHWM) of the whole process;
    every accepted budget must be met (peak <= budget);
  - 3 budgets below the floor, which are refused; each refusal is then checked by running the leanest plan
    (1 cell per call, 1 image per pass, lean session, arena *uncapped*) and showing its peak exceeds the budget.
The sampling process imports the CLI (typer) as `edgediff sample` does, so its baseline is the user's.
Results: benchmarks/results/budget.json (+ budget.png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgediff.bundle import read_manifest
from edgediff.data import write_square_images
from benchmarks.common import SHARED_CPU_NOTE, machine_info, run_fresh, write_json, RESULTS

BUNDLES = {
    # resolution: (grid, dim, mults, n, steps)
    32: dict(grid=2, dim=64, mults=(1, 2, 2), n=16, steps=5),
    256: dict(grid=8, dim=64, mults=(1, 2, 2), n=4, steps=3),
}
QUICK = {32: dict(n=8, steps=3), 256: dict(n=2, steps=2)}
ACCEPT_FACTORS = [float(f) for f in np.linspace(1.0, 3.0, 8)]
REFUSE_FACTORS = [0.7, 0.8, 0.9]

DRIVER = r"""
import json, sys, time
import edgediff.cli  # noqa: F401  (the CLI's imports are part of a real `edgediff sample` process)
from edgediff.runtime.sample_files import sample_to_files
from edgediff.runtime import rss
from edgediff.runtime.sampler import SampleRequest
from edgediff.runtime.planner import BudgetError
a = json.loads(sys.argv[1])
try:
    req = SampleRequest(n=a["n"], steps=a["steps"], seed=0, memory_budget=a.get("budget"), cells_per_call=a.get("cells"),
                        images_per_pass=a.get("images_per_pass"), cap=a.get("cap", True), mode=a.get("mode"))
    t0 = time.perf_counter()
    r = sample_to_files(a["bundle"], req, a.get("out"), None, log=lambda s: None)  # what `edgediff sample` runs
    peak = round(max(r.peak_mb, rss.peak_mb()), 1)  # writing the PNG is part of the run
    print(json.dumps({"accepted": True, "peak_mb": peak, "wall_s": round(time.perf_counter() - t0, 2),
                      "plan": r.plan.to_dict()}))
except BudgetError as e:
    print(json.dumps({"accepted": False, "floor_mb": e.floor_mb, "message": str(e)}))
"""


def fresh(args: dict) -> dict:
    """One sampling run in a new interpreter (the DRIVER: only what `edgediff sample` imports); its JSON line back."""
    return run_fresh(None, [json.dumps(args)], code=DRIVER)


def make_bundle(work: Path, size: int, spec: dict) -> Path:
    """train 1 step + export (both through the CLI, fresh processes); reused when it already exists."""
    bundle = work / f"bundle{size}"
    if (bundle / "manifest.json").is_file():
        return bundle
    data = write_square_images(work / f"images{size}", 8, size)
    run = work / f"run{size}"
    edgediff = [sys.executable, "-m", "edgediff.cli"]
    subprocess.run(edgediff + ["train", "--data", str(data), "--image-size", str(size), "--grid", str(spec["grid"]),
                               "--steps", "1", "--batch-size", "4", "--out", str(run), "--dim", str(spec["dim"]),
                               "--mults", ",".join(map(str, spec["mults"])), "--sample-every", "0",
                               "--checkpoint-every", "1"], check=True, capture_output=True)
    subprocess.run(edgediff + ["export", str(run), "--out", str(bundle)], check=True, capture_output=True)
    return bundle


def sweep(size: int, bundle: Path, n: int, steps: int, log) -> list[dict]:
    base = {"bundle": str(bundle), "n": n, "steps": steps}
    probe = fresh({**base, "budget": 1 << 20})
    assert not probe["accepted"], "a 1 MiB budget must be refused"
    floor = probe["floor_mb"]
    log(f"{size} px: floor {floor} MiB ({probe['message']})")
    rows = []
    for f in REFUSE_FACTORS + ACCEPT_FACTORS:
        budget = round(floor * f, 1)
        r = fresh({**base, "budget": int(budget * (1 << 20)), "out": f"/tmp/edgediff-budget-{os.getpid()}.png"})
        row = {"resolution": size, "grid": BUNDLES[size]["grid"], "n": n, "steps": steps, "budget_mb": budget,
               "budget_over_floor": round(f, 3), "accepted": r["accepted"], "peak_mb": r.get("peak_mb"),
               "plan": r.get("plan"), "wall_s": r.get("wall_s")}
        if r["accepted"]:
            row["met"] = r["peak_mb"] <= budget
            row["estimate_mb"] = r["plan"]["estimate_mb"]
        else:
            row["message"] = r["message"]
            proof = fresh({**base, "cells": 1, "images_per_pass": 1, "cap": False, "mode": "lean"})
            row["proof"] = {"what": "1 cell per call, 1 image per pass, lean session, uncapped arena, no budget",
                            "peak_mb": proof["peak_mb"], "plan": proof["plan"], "wall_s": proof["wall_s"]}
            row["truly_too_small"] = proof["peak_mb"] > budget
        log(json.dumps({k: row.get(k) for k in ("resolution", "budget_mb", "accepted", "peak_mb", "met",
                                                 "truly_too_small")})
            + (f" plan: {row['plan']['variant']} {row['plan']['mode']} c={row['plan']['cells_per_call']} "
               f"g={row['plan']['images_per_pass']}" if row["plan"] else ""))
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["resolution"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5))
    for ax, size in zip(np.atleast_1d(axes), sizes):
        rs = [r for r in rows if r["resolution"] == size]
        acc = [r for r in rs if r["accepted"]]
        ref = [r for r in rs if not r["accepted"]]
        lo = min(r["budget_mb"] for r in rs) * 0.9
        hi = max(r["budget_mb"] for r in rs) * 1.05
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="peak = budget")
        ax.plot([r["budget_mb"] for r in acc], [r["peak_mb"] for r in acc], "o-", label="accepted: measured peak")
        ax.plot([r["budget_mb"] for r in acc], [r["estimate_mb"] for r in acc], "x:", label="planner's estimate")
        ax.plot([r["budget_mb"] for r in ref], [r["proof"]["peak_mb"] for r in ref], "rs",
                label="refused: peak of the leanest plan")
        for r in acc:
            ax.annotate(f"{r['plan']['cells_per_call']}c/{r['plan']['mode'][0]}", (r["budget_mb"], r["peak_mb"]),
                        textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
        ax.set_title(f"{size} px (grid {rs[0]['grid']}, n={rs[0]['n']}, {rs[0]['steps']} steps)")
        ax.set_xlabel("--memory-budget (MiB)")
        ax.set_ylabel("peak RSS of the process (MiB)")
        ax.legend(fontsize=7)
    fig.suptitle("edgediff sample under a memory budget (labels: cells per call / lean or fast session)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown_table(rows: list[dict]) -> str:
    """The README table: one line per run."""
    out = ["| px | budget MiB | × floor | accepted | plan (precision, mode, cells/call, images/pass) | estimate MiB "
           "| peak MiB | peak <= budget | refusal check: leanest plan's peak MiB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["plan"]
        plan = f"{p['variant']}, {p['mode']}, {p['cells_per_call']}, {p['images_per_pass']}" if p else "refused"
        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        met = "" if "met" not in r else ("yes" if r["met"] else "NO")
        proof = ""
        if "proof" in r:
            proof = f"{r['proof']['peak_mb']:.1f} (> budget: {'yes' if r['truly_too_small'] else 'NO'})"
        out.append(f"| {r['resolution']} | {r['budget_mb']:.1f} | {r['budget_over_floor']:.2f} | "
                   f"{'yes' if r['accepted'] else 'no'} | {plan} | {r.get('estimate_mb') or ''} | {peak} | {met} | "
                   f"{proof} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (a smoke run)")
    ap.add_argument("--work", default="/tmp/edgediff-budget", help="where the runs and bundles are made")
    ap.add_argument("--table", action="store_true", help="print the README table of the last results and exit")
    a = ap.parse_args(argv)
    if a.table:
        print(markdown_table(json.loads((RESULTS / ("budget_quick.json" if a.quick else "budget.json")).read_text())["rows"]))
        return 0
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, bundles = [], {}
    for size, spec in BUNDLES.items():
        bundle = make_bundle(work, size, spec)
        manifest = read_manifest(bundle)
        bundles[size] = {"grid": spec["grid"], "dim": spec["dim"], "mults": list(spec["mults"]),
                         "params": manifest.params, "memory_profile": manifest.to_dict()["memory_profile"],
                         "onnx_bytes": manifest.files["denoiser_fp32"].bytes}
        n, steps = (QUICK[size]["n"], QUICK[size]["steps"]) if a.quick else (spec["n"], spec["steps"])
        rows += sweep(size, bundle, n, steps, lambda s: print(s, flush=True))
    accepted = [r for r in rows if r["accepted"]]
    refused = [r for r in rows if not r["accepted"]]
    summary = {
        "accepted": len(accepted), "refused": len(refused),
        "all_accepted_met": all(r["met"] for r in accepted),
        "all_refused_truly_too_small": all(r["truly_too_small"] for r in refused),
        "max_peak_over_budget": max(r["peak_mb"] / r["budget_mb"] for r in accepted),
        "max_estimate_minus_peak_mb": max(r["estimate_mb"] - r["peak_mb"] for r in accepted),
        "min_estimate_minus_peak_mb": min(r["estimate_mb"] - r["peak_mb"] for r in accepted),
    }
    name = "budget_quick" if a.quick else "budget"
    body = {"benchmark": "budget", "machine": machine_info(), "note": SHARED_CPU_NOTE + " Memory figures are not "
            "affected by the sharing; wall times are.", "settings": {"accept_factors": ACCEPT_FACTORS,
            "refuse_factors": REFUSE_FACTORS, "quick": a.quick, "bundles": bundles, "seed": 0,
            "weights": "untrained (1 training step): memory does not depend on the weights"},
            "summary": summary, "rows": rows}
    path = write_json(f"{name}.json", body)
    plot(rows, RESULTS / f"{name}.png")
    print(json.dumps(summary, indent=1))
    print(f"wrote {path} and {RESULTS / (name + '.png')}")
    return 0 if summary["all_accepted_met"] and summary["all_refused_truly_too_small"] else 1


if __name__ == "__main__":
    sys.exit(main())
