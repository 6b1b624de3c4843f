"""Export benchmark: fp32 vs int8 denoiser (size, ms per call, error, FD-Lite0) and the bank LUT at 4/8/16 B/entry.

    python -m benchmarks.export [--run RUN_DIR] [--n 256] [--steps 20] [--quick]

Exports RUN_DIR (a snapshot of it: training may still be writing checkpoints) with --int8 --lut-bytes 8 and the
memory profile, then samples the SAME noise and the SAME bank rows through every variant, so the FD-Lite0
differences are paired comparisons (FD-Lite0 on a few hundred samples is still noisy in absolute terms: compare
the variants with each other, not with other runs):
- fp32 ONNX, float snippets           (= float_bank_fd_lite0: the reference)
- int8 ONNX, float snippets           (the effect of int8 alone)
- fp32 ONNX, LUT snippets at 4/8/16 B (the effect of the lookup table alone)
- int8 ONNX, LUT 8 B                  (what a device runs by default)
Speed: per-call latency at 1/2/4 cells from the bundle's memory profile (fresh processes, runtime settings), plus
an interleaved fp32/int8 timing of larger calls in this process (alternating, so load changes hit both alike).
Writes benchmarks/results/export.json and export.png.

Long runs on a shared box: `--workdir DIR` keeps the snapshot, the bundle and each variant's score
(DIR/scores.json), so an interrupted run resumes where it stopped, and `--only NAME[,NAME]` lets several processes
score different variants of the same workdir in parallel; a final run assembles export.json once all are present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, interleaved_ms, machine_info, write_json

IMAGENET_ENTRIES = 1_281_167
GMEM_FLOAT_BANK_BYTES = IMAGENET_ENTRIES * 768 * 4  # DINOv2 ViT-B CLS, fp32: the 3.9 GB of the GMem paper


def snapshot_run(run: Path, dst: Path) -> Path:
    """Copy run.json, the bank and the latest checkpoint, so a training process can keep pruning its own."""
    from edgediff.checkpoint import latest_checkpoint

    found = latest_checkpoint(run)
    if found is None:
        raise SystemExit(f"{run} has no checkpoint yet")
    tensors, meta = found
    (dst / "checkpoints").mkdir(parents=True)
    for name in ("run.json", "memory_bank.safetensors"):
        if (run / name).exists():
            shutil.copy2(run / name, dst / name)
    shutil.copy2(tensors, dst / "checkpoints" / tensors.name)
    shutil.copy2(tensors.with_suffix(".json"), dst / "checkpoints" / tensors.with_suffix(".json").name)
    (dst / "checkpoints" / "latest.json").write_text(
        f'{{"name": "{tensors.stem}", "step": {int(meta["step"])}}}')
    return dst


def session(path: Path, mode: str = "lean"):
    from edgediff.runtime.session import MODES, create_session

    return create_session(path, MODES[mode].with_(threads=1))


def sample(sess, manifest, snippets: np.ndarray, steps: int, seed: int, batch_images: int = 16) -> np.ndarray:
    """uint8 images; each chunk of `batch_images` has its own seed, identical across variants."""
    from edgediff.images import to_uint8
    from edgediff.runtime.sampler import onnx_eps_fn
    from edgediff.sampling import sample_loop

    out = []
    for k, s in enumerate(range(0, len(snippets), batch_images)):
        sn = snippets[s : s + batch_images]
        x = sample_loop(onnx_eps_fn(sess, manifest), geom=manifest.geometry, n=len(sn), steps=steps, seed=seed + k,
                        snippets=sn, cells_per_call=len(sn) * manifest.num_cells, schedule=manifest.schedule)
        out.append(to_uint8(x))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("/work/runs/default"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="n=32, steps=8: a smoke run (results not meaningful)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the snapshot, bundle and per-variant scores here; a rerun reuses them (and scores only "
                         "the variants still missing), so variants can be scored in parallel processes with --only")
    ap.add_argument("--only", default=None, help="comma list of variants this process may sample (others are taken "
                    "from the workdir's scores or left out): fp32_float,int8_float,fp32_lut4,fp32_lut8,fp32_lut16,"
                    "int8_lut8_bundle; '' samples nothing and just assembles export.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.steps = 32, 8

    from edgediff.bundle import open_bundle, resolve
    from edgediff.data import load_dataset
    from edgediff.encoders import dataset_features
    from edgediff.lut import decode, lut_bytes, mean_cosine, train_pq
    from edgediff.memory_bank import load_run_bank
    from edgediff.metrics import evaluate, quality_fields
    from edgediff_export import ExportOptions, export_run

    keep = a.workdir is not None
    work = a.workdir or Path(tempfile.mkdtemp(prefix="edgediff-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    scores_path = work / "scores.json"
    try:
        run = work / "run" if (work / "run" / "checkpoints").is_dir() else snapshot_run(a.run, work / "run")
        bundle = work / "bundle"
        export_s = None
        if not (bundle / "manifest.json").is_file():
            t0 = time.perf_counter()
            export_run(run, bundle, ExportOptions(int8=True, lut_bytes=8, profile=True), log=print)
            export_s = time.perf_counter() - t0
            (work / "export_s.txt").write_text(str(export_s))
        elif (work / "export_s.txt").is_file():
            export_s = float((work / "export_s.txt").read_text())
        m = open_bundle(bundle)
        bank = load_run_bank(run)
        if bank is None:
            raise SystemExit("the run has no memory bank: the LUT comparison needs one")
        dataset = load_dataset(m.training["data"], m.image_size)
        real = dataset_features(dataset)
        rng = np.random.default_rng(a.seed)
        rows = rng.integers(0, len(bank), a.n)  # the same bank rows for every variant
        float_sn = bank[rows]

        fp32, int8 = session(bundle / "denoiser.onnx"), session(bundle / "denoiser.int8.onnx")
        results: dict[str, dict] = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
        only = set(a.only.split(",")) if a.only else None

        def score(name: str, sess, sn: np.ndarray) -> dict:
            if name in results:
                return results[name]
            if only is not None and name not in only:
                return {"fd_lite0": float("nan"), "kid": float("nan")}
            t = time.perf_counter()
            imgs = sample(sess, m, sn, a.steps, a.seed)
            sample_s = time.perf_counter() - t
            ev = evaluate(imgs, dataset, m.grid, real_features=real, seed=a.seed)
            r = {**quality_fields(ev), "sample_s": sample_s}
            # re-read before merging: other processes (--only) may have added their variants meanwhile
            merged = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
            merged[name] = r
            tmp = scores_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged, indent=1))
            os.replace(tmp, scores_path)
            results.update(merged)
            print(f"{name}: FD-Lite0 {r['fd_lite0']:.3f}, KID {r['kid']:.4f} (sampled in {sample_s:.0f} s)", flush=True)
            return r

        ref = score("fp32_float", fp32, float_sn)
        score("int8_float", int8, float_sn)
        lut = []
        for mb in (4, 8, 16):
            t = time.perf_counter()
            pq = train_pq(bank, mb, seed=a.seed)
            codes = pq.encode(bank)
            dec = decode(codes, pq.codebooks)
            train_s = time.perf_counter() - t
            r = score(f"fp32_lut{mb}", fp32, dec[rows])
            lut.append({"bytes_per_entry": mb, "mean_cosine": mean_cosine(bank, dec), "fd_lite0": r["fd_lite0"],
                        "kid": r["kid"], "fd_lite0_vs_float": r["fd_lite0"] / ref["fd_lite0"] - 1.0,
                        "codebook_bytes": int(pq.codebooks.nbytes), "train_s": train_s,
                        "bytes_for_1_28m_entries": lut_bytes(IMAGENET_ENTRIES, bank.shape[1], mb)})
        lut8 = np.load(bundle / "lut_codes.npy"), np.load(bundle / "lut_codebooks.npy")
        device = score("int8_lut8_bundle", int8, decode(*lut8)[rows])
        required = ["fp32_float", "int8_float"] + [f"fp32_lut{mb}" for mb in (4, 8, 16)]
        if any(k not in results for k in required):
            print(f"scored {sorted(only or [])} into {scores_path}; still missing "
                  f"{[k for k in required if k not in results]}: rerun to assemble export.json")
            return

        prof = m.memory_profile.variants
        sizes = {v: m.files[r].bytes for v, r in (("fp32", "denoiser_fp32"), ("int8", "denoiser_int8"))}
        from edgediff.runtime.profile import example_feeds

        sessions = {v: session(resolve(bundle, m.files[r])) for v, r in (("fp32", "denoiser_fp32"),
                                                                          ("int8", "denoiser_int8"))}
        inter = {c: interleaved_ms(sessions, example_feeds(sessions["fp32"], c)) for c in (4, 16, 64)}
        variants = {}
        for v in ("fp32", "int8"):
            variants[v] = {
                "mb": sizes[v] / 2**20, "bytes": sizes[v],
                "ms_per_call": inter[4][v],
                "ms_per_call_by_cells": {str(c): inter[c][v] for c in inter},
                "profile_ms_per_call": prof[v].ms_per_call, "profile_fast_ms_per_call": prof[f"{v}@fast"].ms_per_call,
                "resident_mb": prof[v].resident_mb, "activation_mb": prof[v].activation_mb,
                "fd_lite0": results[f"{v}_float"]["fd_lite0"], "kid": results[f"{v}_float"]["kid"],
            }
        q8 = m.quality.int8
        variants["int8"].update(
            rel_error_vs_fp32=q8["rel_error"], max_abs_error_vs_fp32=q8["max_abs"], method=q8["method"],
            preset=q8["preset"], speedup_vs_fp32={str(c): inter[c]["fp32"] / inter[c]["int8"] for c in inter},
            fd_lite0_vs_fp32=results["int8_float"]["fd_lite0"] / ref["fd_lite0"] - 1.0,
            size_ratio_vs_fp32=sizes["int8"] / sizes["fp32"])
        dim = int(bank.shape[1])
        body = {
            "benchmark": "export", "machine": machine_info(), "note": SHARED_CPU_NOTE + (
                " FD-Lite0 on a few hundred samples is noisy in absolute terms; all variants share the same noise "
                "seeds and bank rows, so their differences are paired. The run was still training: see "
                "run.step. Variants may be scored by several processes on one --workdir (same snapshot, bundle, "
                "seeds and rows); samples[*].source says where a score came from."),
            "settings": {"n": a.n, "sampler_steps": a.steps, "seed": a.seed, "quick": a.quick,
                         "sessions": "runtime MODES['lean'] (extended opt, capped arena, no mem pattern), 1 thread",
                         "ms_per_call": "median of 20 interleaved fp32/int8 calls of 4 cells in one process",
                         "lut_train": "k-means (k-means++ init, 25 Lloyd iterations, seed) per sub-space on the "
                                      "whole bank", "int8": {k: q8[k] for k in q8 if k not in ("max_abs", "rel_error")}},
            "run": {"dir": str(a.run), "step": m.training["step"], "model": m.model_config.to_dict(), "params": m.params,
                    "bank_entries": int(len(bank)), "snippet_dim": dim, "data": m.training["data"]},
            "export_s": export_s, "parity_fp32_max_abs": m.quality.parity_fp32["max_abs"],
            "fp32": variants["fp32"], "int8": variants["int8"],
            "lut": lut, "float_bank_fd_lite0": ref["fd_lite0"],
            "device_int8_lut8_fd_lite0": None if np.isnan(device["fd_lite0"]) else device["fd_lite0"],
            "float_bank_bytes_per_entry": 4 * dim,
            "bytes_for_1_28m_entries": {
                **{f"lut_{d['bytes_per_entry']}B": d["bytes_for_1_28m_entries"] for d in lut},
                f"float_pca{dim}": IMAGENET_ENTRIES * dim * 4, "gmem_float_768": GMEM_FLOAT_BANK_BYTES},
            "samples": results, "memory_profile": {"baseline_mb": m.memory_profile.baseline_mb,
                                                   "settings": m.memory_profile.settings},
            "wall_s": time.time() - t_start,
        }
        name = "export_quick" if a.quick else "export"
        path = write_json(f"{name}.json", body)
        plot(body, RESULTS / f"{name}.png")
        print(f"wrote {path} and {RESULTS / f'{name}.png'}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def plot(body: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    names = ["fp32", "int8"]
    ax[0].bar(names, [body[n]["mb"] for n in names], color=["tab:blue", "tab:orange"])
    ax[0].set_ylabel("file MiB")
    ax[0].set_title("denoiser size")
    cells = list(body["fp32"]["ms_per_call_by_cells"])
    xs = np.arange(len(cells))
    for i, n in enumerate(names):
        ax[1].bar(xs + 0.4 * i, [body[n]["ms_per_call_by_cells"][c] for c in cells], 0.4, label=n)
    ax[1].set_xticks(xs + 0.2, [f"{c} cells" for c in cells])
    ax[1].set_ylabel("ms per call (median, interleaved)")
    ax[1].set_title(f"speed; FD-Lite0 fp32 {body['fp32']['fd_lite0']:.2f}, int8 {body['int8']['fd_lite0']:.2f}")
    ax[1].legend()
    b = [d["bytes_per_entry"] for d in body["lut"]]
    ax[2].plot(b, [d["fd_lite0"] for d in body["lut"]], "o-", label="LUT (fp32 model)")
    ax[2].axhline(body["float_bank_fd_lite0"], color="k", ls="--",
                  label=f"float bank ({body['float_bank_bytes_per_entry']} B/entry)")
    ax[2].axhline(body["float_bank_fd_lite0"] * 1.05, color="grey", ls=":", label="float bank +5%")
    for d in body["lut"]:
        ax[2].annotate(f"cos {d['mean_cosine']:.3f}", (d["bytes_per_entry"], d["fd_lite0"]), fontsize=8)
    ax[2].set_xscale("log", base=2)
    ax[2].set_xticks(b, [str(x) for x in b])
    ax[2].set_xlabel("bytes per bank entry")
    ax[2].set_ylabel("FD-Lite0 (lower is better)")
    ax[2].set_title("memory bank as a PQ lookup table")
    ax[2].legend(fontsize=8)
    fig.suptitle(f"edgediff export, run step {body['run']['step']}, n={body['settings']['n']}, "
                 f"{body['settings']['sampler_steps']} DDIM steps (shared 2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
