"""When a bundle's int8 denoiser is fit to ship: the one rule the planner, `info` and `export` apply to the
measurements export records in the manifest (`quality.int8`, see export/int8_quality.py).

Why a gate and not "fp32 whenever it fits": int8 is the smaller and faster denoiser (1.4-1.6× per call on the
default), so on a device it is what one wants to run, but only once what it changes is shown to be small where a
user would see it. The thresholds are the ones issue #18 set for the default bundle:
- ε error ≤ 5% in every timestep band starting at t ≥ 100 (below, ε is nearly unobservable and barely moves x₀);
- every recorded quality metric (FD in the bank's feature space and in an independent one) at most 3% worse than
  fp32's (a better FD is no reason to refuse);
- images from the same noise and snippets ≥ 30 dB PSNR against fp32's.
A bundle whose `quality.int8` lacks any of these (older exports, `--no-int8-measure`) does not pass: the planner
then keeps fp32 first, as before.
"""

from __future__ import annotations

MAX_EPS_ERROR = 0.05  # per band with t >= MIN_BAND_T
MIN_BAND_T = 100
MAX_FD_DELTA = 0.03  # relative change of each recorded quality metric
MIN_PSNR_DB = 30.0
REQUIRED_METRICS = ("fd_lite0", "fd_independent")


def _band_start(name: str) -> int:
    """"100-399" → 100; a key of another form counts as no band (so it cannot help a bundle pass)."""
    head = name.split("-")[0]
    return int(head) if head.isdigit() else -1


def int8_failures(q: dict | None) -> list[str]:
    """Why the int8 denoiser described by `q` (the manifest's quality.int8) is not fit to ship; [] when it is."""
    if not q:
        return ["no int8 measurements in the manifest"]
    bands = {k: v for k, v in (q.get("rel_error_by_band") or {}).items() if _band_start(k) >= MIN_BAND_T}
    out = [] if bands else ["no ε error per timestep band"]
    out += [f"ε error {v:.1%} at t {k} (> {MAX_EPS_ERROR:.0%})" for k, v in bands.items() if v > MAX_EPS_ERROR]
    fd = q.get("fd_delta") or {}
    out += [f"no {name} change measured" for name in REQUIRED_METRICS if name not in fd]
    out += [f"{name} {d['rel']:+.1%} (> {MAX_FD_DELTA:.0%})" for name, d in fd.items() if d["rel"] > MAX_FD_DELTA]
    psnr = q.get("psnr_vs_fp32_db")
    if psnr is None:
        out.append("no PSNR against fp32 images")
    elif psnr < MIN_PSNR_DB:
        out.append(f"PSNR vs fp32 {psnr:.1f} dB (< {MIN_PSNR_DB:.0f})")
    return out


def int8_ships(q: dict | None) -> bool:
    return not int8_failures(q)


def verdict(q: dict | None) -> str:
    """One line for `info` and `export`: whether the planner will prefer int8, and if not, why."""
    fails = int8_failures(q)
    if not fails:
        return "int8 fit to ship: yes (the planner runs it first)"
    return "int8 fit to ship: no, " + "; ".join(fails) + " (the planner prefers fp32 where it fits)"
