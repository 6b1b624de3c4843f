"""Diffusion-aware int8 levers, one by one, on the shipped default bundle: error where it matters, and speed.

The default bundle ships without its training run, so this works from its fp32 ONNX directly: calibration and
measurement rows are the emoji images noised to x_t, every cell, each paired with its memory-bank entry decoded
from the bundle's LUT (export/int8_quality.bundle_run_data). For each recipe (export/quantize.Recipe):
- ε relative error per timestep band and the x₀ error it causes (int8_quality.Fp32Reference, as export measures);
- PSNR and mean |Δ| of int8 images against fp32 images from the same noise and snippets (32 images, 25 DDIM steps,
  the bundle's guidance), and FD of both sets against the dataset in both metrics (fd_delta; rows measured before
  the independent metric existed carry FD-Lite0 only);
- speed: ms per denoiser call at 1 and 16 cells in a fresh process, lean and fast session settings, against fp32;
- file size.
"Per-band calibration" is measured as one model calibrated on each band and evaluated on its own band: what scales
that follow t could buy at most (a runtime would hold one session per band).

    python -m benchmarks.int8_levers [--images 32] [--only static,split]
Writes benchmarks/results/int8_levers.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, interleaved_ms, machine_info, run_fresh, write_json
from edgediff.data import load_dataset
from edgediff.bundle import DEFAULT_BUNDLE
from edgediff_export import int8_quality as iq
from edgediff_export.quantize import RECIPES, Recipe, quantize_int8

LEVERS: dict[str, Recipe] = {  # each lever alone on top of today's static recipe, then all of them together
    "static (today)": RECIPES["static"],
    "split-shortcut": Recipe(split_concat=True),
    "fp32 first/last conv": Recipe(keep_fp32=("io",)),
    "fp32 condition MLP": Recipe(keep_fp32=("cond",)),
    "convs only": Recipe(conv_only=True),
    "percentile calibration": Recipe(calibration="percentile"),
    "diffusion (convs only + split + fp32 first/last + percentile)": Recipe(
        conv_only=True, split_concat=True, keep_fp32=("io",), calibration="percentile"),
    "diffusion + most sensitive 15% of convs fp32": Recipe(
        conv_only=True, split_concat=True, keep_fp32=("io",), calibration="percentile", fp32_conv_fraction=0.15),
    "diffusion + most sensitive 30% of convs fp32 (shipped)": RECIPES["diffusion"],
    "weight-only int8": RECIPES["weight-only"],
}
CALIB_BANDS = ((0, 99), (100, 399), (400, 999))
SPEED_CELLS = (1, 16)


def speed(path: Path, mode: str, cells: int) -> float:
    """ms per call in a fresh process, through the profiler's own measurement (the planner's numbers)."""
    return run_fresh("edgediff.runtime.profile", ["--one", path, "--mode", mode, "--cells", cells])["ms_per_call"]


def speeds(path: Path) -> dict:
    return {mode: {str(c): speed(path, mode, c) for c in SPEED_CELLS} for mode in ("lean", "fast")}


def measure_lever(recipe: Recipe, work: Path, data, ref: iq.Fp32Reference, metrics: dict) -> dict:
    dst = work / "int8.onnx"
    t0 = time.perf_counter()
    made = quantize_int8(DEFAULT_BUNDLE / "denoiser.onnx", dst, data, ref.config, recipe=recipe)
    row = {"recipe": recipe.to_dict(), "quantise_s": round(time.perf_counter() - t0, 1),
           "bytes": dst.stat().st_size, "method": made["method"]}
    row.update(ref.compare(dst, metrics))
    row["ms_per_call"] = speeds(dst)
    return row


def per_band_calibration(work: Path, data, ref: iq.Fp32Reference) -> dict:
    """One model per calibration band, each evaluated on the bands it covers."""
    out: dict = {"bands": [list(b) for b in CALIB_BANDS], "rel_error_by_band": {}, "x0_rel_error_by_band": {}}
    for lo, hi in CALIB_BANDS:
        dst = work / f"band{lo}.onnx"
        quantize_int8(DEFAULT_BUNDLE / "denoiser.onnx", dst, data, ref.config, recipe=Recipe(band=(lo, hi)))
        r = ref.band_errors(dst)
        for band in iq.BANDS:
            if lo <= band[0] and band[1] <= hi:
                name = iq.band_name(band)
                out["rel_error_by_band"][name] = r["rel_error_by_band"][name]
                out["x0_rel_error_by_band"][name] = r["x0_rel_error_by_band"][name]
    return out


def alternating_speed(bundle: Path, rows: tuple[int, ...] = (4, 16), rounds: int = 30,
                      extra: dict[str, Path] | None = None) -> dict:
    """fp32 vs int8 of one bundle (and any `extra` int8 files of the same fp32), in one process, calls taken
    alternately (the cores are shared: alternating makes all see the same load), per session mode: median ms per
    call and each one's speed-up over fp32. One DDIM step of the sampler is a fixed number of such calls, so the
    per-call ratio is the per-step ratio."""
    from edgediff.bundle import read_manifest, resolve
    from edgediff.runtime.profile import example_feeds
    from edgediff.runtime.session import MODES, create_session

    m = read_manifest(bundle)
    paths = {v: resolve(bundle, m.files[f"denoiser_{v}"]) for v in ("fp32", "int8")} | (extra or {})
    out: dict = {}
    for mode in ("lean", "fast"):
        s = {v: create_session(path, MODES[mode]) for v, path in paths.items()}
        for k in rows:
            med = interleaved_ms(s, example_feeds(s["fp32"], k), rounds)
            row = {"fp32_ms": round(med["fp32"], 3), "int8_ms": round(med["int8"], 3),
                   "speedup": round(med["fp32"] / med["int8"], 3)}
            row.update({f"{v}_speedup": round(med["fp32"] / med[v], 3) for v in extra or {}})
            out[f"{mode}@{k}"] = row
    return out


def shipped_speed(bundle: Path) -> dict:
    """The bundle's fp32 and int8 alternated with the `diffusion` recipe without the sensitivity pass (quantised
    here from the same fp32): what the fp32 convolutions the pass keeps cost in speed."""
    name = "diffusion (convs only + split + fp32 first/last + percentile)"
    data, config = iq.bundle_run_data(bundle)
    with tempfile.TemporaryDirectory() as d:
        plain = Path(d) / "int8_no_sensitivity.onnx"
        quantize_int8(bundle / "denoiser.onnx", plain, data, config, recipe=LEVERS[name])
        return alternating_speed(bundle, extra={"no_sensitivity": plain})


def table(body: dict) -> str:
    """The README's quantisation table from the result JSON."""
    bands = ("100-399", "400-699", "700-999", "0-49")
    head = ("| recipe | ε error t " + " / ".join(bands) + " | x₀ error t 0-49 | PSNR vs fp32 (median image) | "
            "FD-Lite0 Δ / FD-indep. Δ | ms/call 16 cells, lean (noisy: shared cores) | file |")
    lines = [head, "|" + " --- |" * 7]
    fp = body["fp32_ms_per_call"]["lean"]["16"]
    lines.append(f"| fp32 | – | – | – | – | {fp:.0f} | {body['fp32_bytes'] / 2**20:.2f} MiB |")
    for name, r in body["levers"].items():
        eps = " / ".join(f"{100 * r['rel_error_by_band'][b]:.1f}%" for b in bands)
        ms = r["ms_per_call"]["lean"]["16"]
        fd = " / ".join(f"{100 * r['fd_delta'][k]['rel']:+.1f}%" if k in r["fd_delta"] else "–"
                        for k in ("fd_lite0", "fd_independent"))
        lines.append(f"| {name} | {eps} | {100 * r['x0_rel_error_by_band']['0-49']:.2f}% | "
                     f"{r['psnr_vs_fp32_db']:.1f} dB ({r['psnr_median_image_db']:.1f}) | {fd} | {ms:.0f} | "
                     f"{r['bytes'] / 2**20:.2f} MiB |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--only", default=None, help="comma list of lever names (default: all)")
    ap.add_argument("--merge", action="store_true", help="keep the other levers' rows of the existing JSON")
    ap.add_argument("--no-bands", action="store_true", help="skip the per-band calibration rows")
    ap.add_argument("--table", action="store_true", help="print the README table from the existing JSON")
    ap.add_argument("--shipped", default=None, metavar="BUNDLE",
                    help="only: BUNDLE's quality.int8 and profile, and fp32 vs int8 speed from alternating calls "
                         "→ default_int8.json")
    a = ap.parse_args()
    if a.shipped:
        from edgediff.bundle import read_manifest

        m = read_manifest(a.shipped)
        body = {"benchmark": "default_int8", "machine": machine_info(), "note": SHARED_CPU_NOTE,
                "how": f"edgediff export {DEFAULT_BUNDLE.name} --out BUNDLE --int8 (the 'diffusion' recipe), then "
                       "this benchmark: the manifest's quality.int8 and memory profile, and fp32 vs int8 ms per "
                       "call with calls taken alternately in one process",
                "int8": m.quality.int8, "files": {r: e.bytes for r, e in m.files.items()},
                "resident_mb": {k: v.resident_mb for k, v in m.memory_profile.variants.items()},
                "speed": shipped_speed(Path(a.shipped)),
                "speed_other": "<name>_speedup: the same fp32 quantised by that LEVERS recipe, timed in the same "
                               "alternation"}
        print(json.dumps(body["speed"], indent=1))
        write_json("default_int8.json", body)
        return
    if a.table:
        print(table(json.loads((RESULTS / "int8_levers.json").read_text())))
        return
    import numpy as np

    from edgediff.bundle import read_manifest

    if not (DEFAULT_BUNDLE / "denoiser.onnx").is_file():
        raise SystemExit("the default bundle holds no fp32 denoiser.onnx (exported with --ort?): the levers need the "
                         "ONNX graph; re-export it without --ort")
    manifest = read_manifest(DEFAULT_BUNDLE)
    guidance = manifest.sampling.get("guidance", 1.0)
    data, config = iq.bundle_run_data(DEFAULT_BUNDLE)
    metrics = iq.default_metrics(load_dataset(manifest.training.get("data") or "emoji", config.image_size))
    snippets = data.bank[np.random.default_rng(23).integers(0, len(data.bank), a.images)]
    levers = LEVERS if a.only is None else {k: LEVERS[k] for k in a.only.split(",")}
    rows: dict = {}
    ref = iq.Fp32Reference(DEFAULT_BUNDLE / "denoiser.onnx", data, config, snippets, guidance=guidance)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        fp32_speed = speeds(DEFAULT_BUNDLE / "denoiser.onnx")
        for name, recipe in levers.items():
            rows[name] = measure_lever(recipe, work, data, ref, metrics)
            r = rows[name]
            r["speedup_vs_fp32"] = {m: {c: fp32_speed[m][c] / r["ms_per_call"][m][c] for c in fp32_speed[m]}
                                    for m in fp32_speed}
            print(f"{name}: ε by band {json.dumps({k: round(v, 4) for k, v in r['rel_error_by_band'].items()})}, "
                  f"PSNR {r['psnr_vs_fp32_db']:.1f} dB, FD {r['fd_delta']['fd_lite0']['rel']:+.1%}, "
                  f"speed-up at 16 cells lean {r['speedup_vs_fp32']['lean']['16']:.2f}×", flush=True)
        band = None if a.no_bands else per_band_calibration(work, data, ref)
    # read at the end, so that runs of disjoint --only sets in parallel keep each other's rows
    old = RESULTS / "int8_levers.json"
    prev = json.loads(old.read_text()) if a.merge and old.is_file() else {}
    rows = {**{k: v for k, v in prev.get("levers", {}).items() if k not in levers}, **rows}
    rows = {k: rows[k] for k in LEVERS if k in rows}
    band = band or prev.get("per_band_calibration")
    write_json("int8_levers.json", {
        "benchmark": "int8_levers", "machine": machine_info(), "note": SHARED_CPU_NOTE,
        "bundle": "edgediff/default_bundle (fp32 ONNX; calibration on emoji + LUT-decoded snippets)",
        "fp32_bytes": (DEFAULT_BUNDLE / "denoiser.onnx").stat().st_size, "fp32_ms_per_call": fp32_speed,
        "images": {"n": a.images, "ddim_steps": 25, "guidance": guidance}, "levers": rows,
        "per_band_calibration": band,
    })


if __name__ == "__main__":
    main()
