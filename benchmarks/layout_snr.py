"""Where the layout is still undecided: for each model, the timesteps at which its global content (the noisy image
average-pooled k × k to cell size) has a signal-to-noise ratio above 1, from the schedule it trains with.

Pooling k × k pixels divides the noise's standard deviation by k, so the pooled SNR is ᾱ/(1−ᾱ) · k². Where it is
above 1 the layout is given to the model, not drawn by it (docs/scale.md). No timing: this reads edgediff.schedule.

    python -m benchmarks.layout_snr   →   benchmarks/results/layout_snr.json
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.common import machine_info, write_json
from edgediff.schedule import Schedule

MODELS = {  # name → (pooling side k: image side ÷ cell side, schedule shift)
    "32 px, 2 x 2 cells (the shipped default)": (2, 1.0),
    "128 px, 8 x 8 cells, plain cosine (emoji-128)": (8, 1.0),
    "128 px, 8 x 8 cells, --schedule-shift 4": (8, 4.0),
}


def pooled_snr_row(pool: int, shift: float) -> dict:
    """The share of training timesteps with pooled SNR > 1, the last such t, and the pooled SNR at t = 800, 900."""
    a = Schedule(shift=shift).alphas_cumprod()
    snr = a / (1.0 - a) * pool**2
    legible = np.nonzero(snr > 1.0)[0]
    return {"pool": pool, "shift": shift, "share_of_timesteps_legible": round(float((snr > 1.0).mean()), 3),
            "last_legible_t": int(legible.max()), "pooled_snr_t800": round(float(snr[800]), 3),
            "pooled_snr_t900": round(float(snr[900]), 3)}


def main() -> None:
    rows = {name: pooled_snr_row(pool, shift) for name, (pool, shift) in MODELS.items()}
    write_json("layout_snr.json", {"machine": machine_info(), "models": rows})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
