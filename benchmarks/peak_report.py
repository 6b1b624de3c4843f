"""The peak-memory benchmark's results read back: the summary of the issue's goals, the figure, the README table,
parts measured at different times combined into one file, and the exporter's parity figures of its bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import RESULTS, machine_info, save_figure, write_json
from benchmarks.peak_setup import STEPS


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
        s = {"lowest_peak": {k: best.get(k, 0) for k in ("grid", "halo", "precision", "peak_mb", "floor_mb",
                                                         "measured_over_floor")}}
        if d:
            s["diffusers_peak_mb"] = d["peak_mb"]
            s["peak_ratio_lowest_vs_diffusers"] = round(best["peak_mb"] / d["peak_mb"], 4)
            fp = [r for r in at if r["precision"] == "fp32" and r.get("s_per_step")]
            if fp:
                fastest = min(fp, key=lambda r: r["s_per_step"])
                s["fastest_fp32"] = {k: fastest.get(k, 0) for k in ("grid", "halo", "s_per_step", "peak_mb")}
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
            out.setdefault(f"{r['resolution']}_no_budget", {})[_config_name(r)] = {
                "peak_mb": r["peak_mb"], "s_per_step": r["s_per_step"],
                "time_ratio_vs_diffusers": round(r["s_per_step"] / d["s_per_step"], 3)}
    return out


def _config_name(r: dict) -> str:
    """grid8_fp32, or grid8_halo4_fp32 for a halo row: rows that differ only in the halo must not share a key."""
    halo = r.get("halo", 0)
    return f"grid{r['grid']}_" + (f"halo{halo}_" if halo else "") + r["precision"]


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
                         and r["grid"] == g and r["precision"] == prec and r.get("budget") == "floor"
                         and not r.get("halo", 0))  # the lines are halo 0; halo rows are single 512 px points
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


def markdown(body: dict) -> str:
    """The README's headline table: per resolution, diffusers vs edgediff's full image (grid 1) and its leanest grid."""
    rows = [r for r in body["rows"] if "error" not in r]
    diff = {r["resolution"]: r for r in rows if r["tool"] == "diffusers"}
    ed = [r for r in rows if r["tool"] == "edgediff" and r.get("budget") == "floor"]
    out = ["| px | tool | grid | halo | precision | peak MiB | floor MiB | peak / floor | s / step | params |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for res in sorted({r["resolution"] for r in rows}):
        d = diff.get(res)
        if d:
            out.append(f"| {res} | diffusers (torch) | 1 | | fp32 | {d['peak_mb']:.0f} | | | {d['s_per_step']:.2f} | "
                       f"{d['params'] / 1e6:.2f}M |")
        for r in sorted((r for r in ed if r["resolution"] == res),
                        key=lambda r: (r["grid"], r.get("halo", 0), r["precision"])):
            out.append(f"| {res} | edgediff | {r['grid']} | {r.get('halo', 0)} | {r['precision']} | {r['peak_mb']:.0f} | "
                       f"{r['floor_mb']:.0f} | "
                       f"{r['measured_over_floor']:.2f} | {r['s_per_step']:.2f} | {r['params'] / 1e6:.2f}M |")
    return "\n".join(out)


def row_key(r: dict) -> tuple:
    return (r["tool"], r["resolution"], r["grid"], r.get("halo", 0), r["precision"], r.get("budget"))


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
                                                        r.get("halo", 0), r["precision"], r.get("budget") or ""))
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
