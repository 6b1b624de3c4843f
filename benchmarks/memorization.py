"""Effective model memorisation (EMM): how large a training set a small patch model still copies, per bank design.

Gu et al. (2023): train on growing subsets with everything else fixed; the memorisation ratio is the fraction of
generated samples whose nearest training image is < 1/3 the distance of the second nearest; EMM is the largest
subset size at which that ratio stays >= 90%. Here it is measured three times, one per memory-bank design:

- "none":      --no-memory, every sample drawn with the null snippet;
- "per_image": the normal GMem bank, one snippet per training image (GMem-style sampling: a random entry);
- "kmeans":    the bank quantised to fewer entries: every image's feature replaced by its k-means centre
               (n/8 centres), so one snippet is shared by ~8 images, like a coarse class label.

Both banks go through the same path (`TrainConfig.features`, Lite0 features of the same emoji, PCA 64), so they
differ only in the number of distinct entries. Subsets are nested and class-balanced-ish: emoji are clustered
(k-means on Lite0 features) and drawn round-robin over clusters, so a larger subset adds images from every
cluster. Training always mirrors images (flip augmentation), so a training image and its mirror count as one
image when measuring (edgediff.memorization.nearest_groups).

Reference rows: the closed-form optimal denoiser over the same subset, sampled through the same DDIM loop, at
grid 1 (full image: the fully memorising model) and at the model's grid (the optimal *patch* denoiser, which sees
only a cell plus the pooled image).

    python -m benchmarks.memorization            # ≈ 45-60 min on 2 shared cores (two 1-thread workers)
    python -m benchmarks.memorization --quick    # a few minutes: small sizes, short training

The sizes, 8 px images and 1200 steps are what a 60-minute budget on 2 cores shared with other jobs allows;
at 16 px and 700 steps not even 8 images were memorised (models still noisy). On a GPU raise image_size,
steps and sizes together.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SHARED_CPU_NOTE, machine_info, write_json

BANKS = ("none", "per_image", "kmeans")
FULL = dict(sizes=[4, 8, 16, 32, 64], steps=1200, dim=16, mults=[1, 2], batch_size=64, lr=2e-3,
            ema_decay=0.99, image_size=8, grid=2, n_samples=48, sampler_steps=20, images_per_centre=8,
            balance_clusters=16, snippet_dropout=0.2, workers=2, seed=0)
QUICK = dict(FULL, sizes=[4, 8], steps=100, n_samples=16, sampler_steps=10)
THRESHOLD_EMM = 0.9


def balanced_order(features: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """A permutation of all images: round-robin over k-means clusters of their features, random within each.

    Every prefix of it is a nested, roughly class-balanced subset (emoji have no labels; clusters stand in)."""
    from edgediff.lut import kmeans
    from edgediff.memory_bank import l2_normalise

    rng = np.random.default_rng(seed)
    x = l2_normalise(features)
    centres = kmeans(x, clusters, rng=rng)
    assign = ((x[:, None, :] - centres[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    queues = [list(rng.permutation(np.flatnonzero(assign == c))) for c in range(clusters)]
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop())
    return np.asarray(order, dtype=np.int64)


def kmeans_features(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(each row replaced by its k-means centre [n, F], assignment [n]) in L2-normalised feature space."""
    from edgediff.lut import kmeans
    from edgediff.memory_bank import l2_normalise

    x = l2_normalise(features)
    centres = kmeans(x, k, rng=np.random.default_rng(seed)).astype(np.float64)
    assign = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres[assign].astype(np.float32), assign


def measure(samples_u8: np.ndarray, train_u8: np.ndarray) -> dict:
    """Memorisation ratio (and distance summary) of samples against a training subset and its mirrors."""
    from edgediff.memorization import distance_ratio, memorized, nearest_groups, with_flips

    refs, groups = with_flips(train_u8)
    nb = nearest_groups(samples_u8, refs, groups, 2).neighbours
    d1, d2 = nb.distances[:, 0], nb.distances[:, 1]
    ratio = distance_ratio(d1, d2)
    return {
        "memorization_ratio": float(memorized(d1, d2).mean()),
        "median_d1_over_d2": float(np.median(ratio)),
        "distinct_nearest": int(len(np.unique(nb.indices[:, 0]))),
    }


def run_one(job: dict) -> dict:
    """Train one model on one subset with one bank design, sample it, and measure memorisation (own process)."""
    import torch

    torch.set_num_threads(1)
    from edgediff.checkpoint import load_ema_model
    from edgediff.data import load_dataset
    from edgediff.images import to_uint8
    from edgediff.torch_sampler import sample_torch
    from edgediff.train import TrainConfig, train

    s = job["settings"]
    out = Path(job["workdir"]) / f"run_{job['bank']}_{job['size']}"
    cfg = TrainConfig(
        data=job["data_dir"], out=str(out), image_size=s["image_size"], grid=s["grid"], steps=s["steps"],
        batch_size=s["batch_size"], lr=s["lr"], ema_decay=s["ema_decay"], seed=s["seed"],
        memory=job["bank"] != "none", snippet_dropout=s["snippet_dropout"], features=job.get("features"),
        sample_every=0, checkpoint_every=s["steps"], device="cpu",
        model={"dim": s["dim"], "mults": s["mults"]},
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    train_s = time.perf_counter() - t0
    model, mcfg, _ = load_ema_model(out)
    snippets = None
    if job["bank"] != "none":
        from edgediff.memory_bank import bank_for_training
        from edgediff.snippets import random_entries

        bank = bank_for_training(load_dataset(job["data_dir"], s["image_size"]), cfg)
        snippets = random_entries(bank.own, s["n_samples"], seed=s["seed"] + 1)
    imgs = sample_torch(model, mcfg, n=s["n_samples"], steps=s["sampler_steps"], seed=s["seed"] + 1,
                        snippets=snippets, cells_per_call=min(256, s["n_samples"] * mcfg.num_cells))
    samples = to_uint8(imgs)
    train_u8 = load_dataset(job["data_dir"], s["image_size"]).images
    row = {"subset_size": job["size"], "bank": job["bank"], **measure(samples, train_u8),
           "bank_entries": job.get("bank_entries"), "final_loss": float(np.mean(result["losses"][-50:])),
           "train_seconds": round(train_s, 1), "steps_per_s": round(result["steps_per_s"], 2),
           "params": result["params"]}
    np.save(out / "samples_u8.npy", samples)
    return row


def reference_rows(subsets: dict[int, np.ndarray], s: dict) -> list[dict]:
    """Closed-form optimal denoiser over each subset (+ mirrors), at grid 1 and at the model's grid."""
    from edgediff.images import to_float, to_uint8
    from benchmarks.optimal_denoiser import sample_optimal
    from edgediff.memorization import with_flips

    rows = []
    for size, imgs in subsets.items():
        stored = to_float(with_flips(imgs)[0])
        for grid in sorted({1, s["grid"]}):
            out = to_uint8(sample_optimal(stored, n=s["n_samples"], grid=grid, steps=s["sampler_steps"],
                                          seed=s["seed"] + 1))
            rows.append({"subset_size": size, "denoiser": "optimal_full_image" if grid == 1 else "optimal_patch",
                         "grid": grid, **measure(out, imgs)})
    return rows


def emm(rows: list[dict], bank: str, sizes: list[int]) -> int | None:
    """Largest size whose ratio — and that of every smaller size — is >= 90% (None: not even the smallest)."""
    by_size = {r["subset_size"]: r["memorization_ratio"] for r in rows
               if r["bank"] == bank and r["memorization_ratio"] is not None}
    best = None
    for n in sorted(sizes):
        if n not in by_size or by_size[n] < THRESHOLD_EMM:
            break
        best = n
    return best


def plot(result: dict, path: Path) -> None:
    """Left: memorisation ratio against subset size (EMM is where it leaves the 90% line). Right: the median
    d1/d2, which still shows the trend when no setting reaches 90% (lower = closer to one training image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    labels = {"none": "no memory (null snippet)", "per_image": "bank: one snippet per image",
              "kmeans": f"bank: k-means, 1 entry per {result['settings']['images_per_centre']} images"}
    for bank, marker in zip(BANKS, "osD"):
        rows = sorted((r for r in result["rows"] if r["bank"] == bank and r["memorization_ratio"] is not None),
                      key=lambda r: r["subset_size"])
        if rows:
            e = result["emm"].get(bank)
            sizes = [r["subset_size"] for r in rows]
            ax.plot(sizes, [r["memorization_ratio"] for r in rows], marker + "-",
                    label=f"{labels[bank]} (EMM {e if e is not None else '< smallest'})")
            ax2.plot(sizes, [r["median_d1_over_d2"] for r in rows], marker + "-", label=labels[bank])
    for den, style in (("optimal_full_image", ":"), ("optimal_patch", "--")):
        rows = sorted((r for r in result["reference_rows"] if r["denoiser"] == den), key=lambda r: r["subset_size"])
        if rows:
            lab = f"closed-form optimum, {den.replace('optimal_', '').replace('_', ' ')}"
            sizes = [r["subset_size"] for r in rows]
            ax.plot(sizes, [r["memorization_ratio"] for r in rows], style, color="gray", label=lab)
            ax2.plot(sizes, [r["median_d1_over_d2"] for r in rows], style, color="gray", label=lab)
    s = result["settings"]
    ax.axhline(THRESHOLD_EMM, color="red", lw=0.8, ls="-.")
    ax2.axhline(1 / 3, color="red", lw=0.8, ls="-.")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xlabel("training subset size (emoji)")
    ax.set_ylim(-0.03, 1.03)
    ax2.set_ylim(0, 1.05)
    ax.set_ylabel(f"memorisation ratio (d1/d2 < 1/3, {s['n_samples']} samples)")
    ax2.set_ylabel("median d1/d2 of the samples")
    fig.suptitle(f"EMM on emoji, {s['image_size']} px, grid {s['grid']}, UNet dim {s['dim']}, {s['steps']} steps, "
                 f"batch {s['batch_size']}", fontsize=10)
    handles, labs = ax.get_legend_handles_labels()
    fig.legend(handles, labs, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = path.with_suffix(f".{os.getpid()}.tmp.png")
    fig.savefig(buf, dpi=120)
    plt.close(fig)
    os.replace(buf, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, short training (a few minutes)")
    ap.add_argument("--workers", type=int, default=None, help="training processes in parallel (1 thread each)")
    ap.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--out", default=None, help="result JSON name in benchmarks/results/")
    ap.add_argument("--replot", action="store_true", help="only recompute EMM and redraw the PNG from the JSON")
    args = ap.parse_args(argv)
    if args.replot:
        name = args.out or ("memorization_quick.json" if args.quick else "memorization.json")
        result = json.loads((RESULTS / name).read_text())
        result["emm"] = {b: emm(result["rows"], b, result["settings"]["sizes"]) for b in BANKS}
        write_json(name, result)
        plot(result, RESULTS / name.replace(".json", ".png"))
        print(f"EMM: {result['emm']} -> {RESULTS / name}")
        return result
    s = dict(QUICK if args.quick else FULL)
    if args.workers:
        s["workers"] = args.workers
    name = args.out or ("memorization_quick.json" if args.quick else "memorization.json")

    from edgediff.data import load_dataset
    from edgediff.encoders import dataset_features
    from edgediff.images import save_png

    small = load_dataset("emoji", s["image_size"])
    # Bank features: Lite0 on the 32 px renders of the same emoji (same order; cached by the memory-bank work),
    # a sharper view for the encoder than 16 px upscaled to 224.
    feat_ds = load_dataset("emoji", 32)
    if len(feat_ds) != len(small):
        raise SystemExit(f"emoji at 32 px ({len(feat_ds)}) and {s['image_size']} px ({len(small)}) differ in count")
    feats = dataset_features(feat_ds)
    order = balanced_order(feats, s["balance_clusters"], s["seed"])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgediff_emm_"))
    workdir.mkdir(parents=True, exist_ok=True)

    jobs, subsets = [], {}
    for size in s["sizes"]:
        idx = order[:size]
        subsets[size] = small.images[idx]
        data_dir = workdir / f"data_{size}"
        for k, i in enumerate(idx):
            save_png(small.images[i], data_dir / f"{k:04d}.png")  # sorted names = this order
        per_image = workdir / f"features_per_image_{size}.npy"
        np.save(per_image, feats[idx])
        k_centres = max(2, size // s["images_per_centre"])
        centred, _ = kmeans_features(feats[idx], k_centres, s["seed"])
        km = workdir / f"features_kmeans_{size}.npy"
        np.save(km, centred)
        for bank in BANKS:
            jobs.append({"bank": bank, "size": size, "data_dir": str(data_dir), "workdir": str(workdir),
                         "settings": s, "features": {"none": None, "per_image": str(per_image), "kmeans": str(km)}[bank],
                         "bank_entries": {"none": 0, "per_image": size, "kmeans": k_centres}[bank]})

    result = {
        "benchmark": "memorization (EMM)",
        "machine": machine_info(),
        "note": SHARED_CPU_NOTE + " Ratios are over n_samples samples each, so ±~7 percentage points of sampling"
                " noise at 48 samples; EMM needs every size up to it at >= 90%. Bank features: Lite0 on the 32 px renders"
                " of the same emoji. k-means bank: max(2, n/8) entries.",
        "settings": s,
        "subset_indices": {str(k): [int(i) for i in order[:k]] for k in s["sizes"]},
        "rows": [], "reference_rows": [], "emm": {},
    }
    t0 = time.perf_counter()

    def save() -> None:
        result["rows"].sort(key=lambda r: (BANKS.index(r["bank"]), r["subset_size"]))
        result["emm"] = {b: emm(result["rows"], b, s["sizes"]) for b in BANKS}
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_json(name, result)
        plot(result, RESULTS / name.replace(".json", ".png"))

    with ProcessPoolExecutor(max_workers=s["workers"], mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, j): j for j in jobs}
        result["reference_rows"] = reference_rows(subsets, s)
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                row = fut.result()
            except Exception as e:  # one failed run must not lose the others: record it and go on
                row = {"subset_size": job["size"], "bank": job["bank"], "memorization_ratio": None,
                       "error": f"{type(e).__name__}: {e}"}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save()
    save()
    print(f"EMM: {result['emm']}  ({result['wall_seconds']:.0f} s) -> {RESULTS / name}")
    return result


if __name__ == "__main__":
    main()
