"""What the lookup table costs for each snippet mode: bytes per entry and mean cosine to the float bank.

The device never holds the float bank: export product-quantises whatever the model consumes (edgediff/lut.py).
With the shipped PCA snippets that is 64-d; with --snippet-mode gmem (GMem's recipe) it is the whole 1280-d Lite0
feature, which needs more bytes per entry for the same fidelity, and its codebooks grow with the dim (256·D·4
bytes). This builds both banks of the emoji set exactly as training does (edgediff.memory_bank) and measures PQ at
several code sizes. Writes benchmarks/results/snippet_lut.json.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import machine_info, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bytes", default="4,8,16,32,64,128", help="comma-separated bytes per entry (PQ subvectors)")
    a = ap.parse_args()
    from edgediff.data import load_dataset
    from edgediff.encoders import ENCODER_NAME, dataset_features
    from edgediff.lut import lut_bytes, mean_cosine, train_pq
    from edgediff.memory_bank import build_bank, build_full_bank

    ds = load_dataset("emoji", 32)
    own, flipped = dataset_features(ds), dataset_features(ds, flipped=True)
    info = {"encoder": ENCODER_NAME}
    banks = {"pca": build_bank(own, flipped, 64, info).own, "gmem": build_full_bank(own, flipped, info).own}
    rows = []
    for mode, bank in banks.items():
        for m in (int(x) for x in a.bytes.split(",")):
            if bank.shape[1] % m:
                continue
            t = time.perf_counter()
            pq = train_pq(bank, m, seed=0)
            cos = mean_cosine(bank, pq.decode(pq.encode(bank)))
            rows.append({"snippet_mode": mode, "dim": int(bank.shape[1]), "bytes_per_entry": m,
                         "float_bytes_per_entry": int(bank.shape[1]) * 4, "mean_cosine": round(cos, 5),
                         "lut_bytes_1300_entries": lut_bytes(len(bank), bank.shape[1], m),
                         "lut_bytes_1_28m_entries": lut_bytes(1_281_167, bank.shape[1], m),
                         "train_s": round(time.perf_counter() - t, 1)})
            print(f"{mode} {bank.shape[1]}-d, {m} B/entry: mean cosine {cos:.4f}", flush=True)
    write_json("snippet_lut.json", {"benchmark": "snippet_lut", "machine": machine_info(), "data": "emoji 32 px",
                                    "entries": len(own), "rows": rows})


if __name__ == "__main__":
    main()
