"""The peak-memory benchmark's subjects: the widths and DDIM steps it measures, and its bundles (untrained models
of those widths, exported by the project's own exporter). Memory and speed do not depend on training, so an
untrained model stands in; the int8 calibration set is cut to a few rows, because the values it calibrates do not
change the graph, only its scales.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgediff.model_config import preset

STEPS = 20
# the unet-l preset (ModelConfig's defaults, ~4.5M parameters): the bundles these rows measure are untrained
WIDTHS = dict({k: v for k, v in preset("unet-l").items() if k != "backbone"}, num_res_blocks=1)
CALIB_TIMESTEPS = (800, 200)  # int8 calibration of the benchmark bundles: one row per timestep and cell


def make_data_folder(root: Path, n: int = 8) -> Path:
    """A handful of emoji as PNGs: the export's parity check and int8 calibration read the run's training data,
    and the full emoji set at 512 px would be gigabytes."""
    from edgediff.data import load_dataset
    from edgediff.images import save_png

    folder = root / "data"
    if not folder.is_dir() or len(list(folder.glob("*.png"))) < n:
        ds = load_dataset("emoji", 64)
        for i in range(n):
            save_png(ds.images[i * 37 % len(ds)], folder / f"{i:02d}.png")
    return folder


def make_untrained_run(run_dir: Path, resolution: int, grid: int, data: Path, halo: int = 0,
                       widths: dict | None = None) -> int:
    """A run directory whose checkpoint holds an untrained model of `widths` (default WIDTHS) at (resolution, grid);
    no memory bank.

    The UNet zero-initialises its last convs (its output would be exactly 0); they get small random weights here so
    the int8 calibration sees non-degenerate ranges, and every parameter a tiny jitter. Returns the parameter count.
    """
    import torch

    from edgediff.checkpoint import latest_checkpoint, save_checkpoint
    from edgediff.files import atomic_write_bytes
    from edgediff.models import ModelConfig, build_model, count_params

    config = ModelConfig(image_size=resolution, grid=grid, halo=halo, **(WIDTHS if widths is None else widths))
    torch.manual_seed(0)
    model = build_model(config)
    params = count_params(model)
    if latest_checkpoint(run_dir) if run_dir.exists() else None:
        return params
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0.0, 0.02)
            # untrained GroupNorm/bias vectors are identical (ones, zeros); the exporter de-duplicates identical
            # initializers into one shared tensor, which the int8 quantiser refuses: jitter them as training would
            p.add_(torch.randn_like(p) * 1e-3)
    train = {"data": str(data), "image_size": resolution, "grid": grid, "memory": False, "steps": 0,
             "note": "untrained: peak-memory benchmark bundle"}
    meta = {"train": train, "model": config.to_dict(), "memory": {}}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "run.json", json.dumps(meta, indent=1).encode())
    opt = torch.optim.AdamW(model.parameters())
    import copy

    save_checkpoint(run_dir, 0, model, copy.deepcopy(model), opt, dict(meta, losses=[]))
    return params


def export_bench_bundle(run_dir: str, out: str, int8: bool, lean_profile: bool = False, ort: bool = False) -> dict:
    """`edgediff export` (fresh process) with a calibration set cut to one row per timestep in CALIB_TIMESTEPS and
    cell, and parity checked at one timestep: the 512 px full-image model cannot calibrate on 1024 rows here."""
    from edgediff_export import ExportOptions, export_run

    # lean_profile: the time-boxed full run profiles only the lean mode the budget-floor rows use
    options = ExportOptions(int8=int8, profile=not ort, int8_measure=False, calib_timesteps=CALIB_TIMESTEPS,
                            calib_rows=len(CALIB_TIMESTEPS), parity_timesteps=(500,),
                            profile_modes=("lean",) if lean_profile else None)
    t0 = time.perf_counter()
    res = export_run(run_dir, out, options)
    if ort:  # the ONNX bundle stays (the analytic floor reads its graph); the probes run its ORT-format copy
        res = export_run(out, f"{out}_ort", ExportOptions(ort_format=True, profile_modes=options.profile_modes))
    return {"export_s": round(time.perf_counter() - t0, 1), "params": res.manifest.params}
