"""The EMA denoiser as one self-contained ONNX file, checked against torch before anything trusts it.

torch 2.13's `torch.onnx.export` is the dynamo exporter: it needs `external_data=False` to keep the weights
inside the .onnx (a device bundle is a set of checksummed files; a side file the manifest does not list would
break that), and `dynamic_shapes` to leave the batch (= cells per call) free, which the budget planner varies.
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig
from edgediff.cells import INPUT_NAMES, OUTPUT_NAMES
from edgediff.models.cells import example_inputs

OPSET = 18
PARITY_TOL = 1e-4  # for cells up to PARITY_REF_SIDE px with outputs of unit scale; see parity_tolerance
PARITY_REF_SIDE = 64


@dataclass
class Parity:
    """max |ORT − torch| over the checked inputs (every cell at each t), and how many rows were checked."""

    max_abs: float
    rows: int
    timesteps: list[int]
    tolerance: float = PARITY_TOL

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "rows": self.rows, "timesteps": self.timesteps, "tolerance": self.tolerance}


def parity_tolerance(side: int, out_scale: float, tol: float = PARITY_TOL) -> float:
    """Allowed max |ORT − torch| for cells of `side` px whose torch outputs reach `out_scale`.

    Float32 rounding in a reduction grows like the square root of its length, and GroupNorm reduces over the whole
    cell: √(H·W) = the side. Measured (benchmarks/results/export_parity.json): 2e-6-1.6e-5 for 8-256 px cells, 1.2e-4
    for a 512 px full image. So the bound scales with side / 64 and with the output scale (never below the fixed
    1e-4): still tight enough to catch an op that exports differently (those err by 1e-2 and up).
    """
    return tol * max(1.0, side / PARITY_REF_SIDE) * max(1.0, out_scale)


def export_onnx(model: torch.nn.Module, config: ModelConfig, path: Path, opset: int = OPSET) -> Path:
    """Write `model` to `path` (single file, opset `opset`, dynamic batch named 'batch')."""
    model = model.eval()
    ex = example_inputs(config, batch=3)  # batch > 1 so the exporter cannot specialise the batch to 1
    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = {name: {0: batch} for name in INPUT_NAMES}
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                model, tuple(ex[n] for n in INPUT_NAMES), str(path), input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=True, external_data=False,
                dynamic_shapes=dyn,
            )
        except Exception as e:  # the exporter raises many types; the user needs to know export itself failed
            raise EdgediffError(f"ONNX export of the {config.backbone} denoiser failed ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); rerun with --debug") from e
    stray = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    if stray:
        raise EdgediffError(f"the exporter wrote side files {[p.name for p in stray]}; the bundle must be one file")
    return path


def torch_outputs(model: torch.nn.Module, inputs: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for s in range(0, len(inputs["patch"]), batch):
            outs.append(model(*[torch.from_numpy(inputs[n][s : s + batch]) for n in INPUT_NAMES]).numpy())
    return np.concatenate(outs)


def session(path: Path):
    """A plain CPU session (one thread) for checking a model file: the numbers, not the speed, matter here (the
    device's sessions are built by edgediff.runtime.session from a plan)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_rows(sess, inputs: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    """The first output of `sess` over every row of `inputs` (fed by the session's own input names)."""
    names = [i.name for i in sess.get_inputs()]
    n = len(inputs[names[0]])
    return np.concatenate([sess.run(None, {k: inputs[k][s : s + batch] for k in names})[0]
                           for s in range(0, n, batch)])


def ort_outputs(path: Path, inputs: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    return run_rows(session(path), inputs, batch)


def check_parity(model: torch.nn.Module, path: Path, inputs: dict[str, np.ndarray],
                 tol: float = PARITY_TOL) -> Parity:
    """Refuse (EdgediffError) an ONNX file whose outputs differ from torch by more than `tol` anywhere."""
    want = torch_outputs(model, inputs)
    got = ort_outputs(path, inputs)
    if got.shape != want.shape:
        raise EdgediffError(f"exported denoiser outputs {got.shape}, torch {want.shape}; export is broken, "
                            "report it with --debug")
    err = float(np.max(np.abs(got - want)))
    ts = sorted({int(t) for t in inputs["timestep"]}, reverse=True)
    bound = parity_tolerance(int(want.shape[-1]), float(np.max(np.abs(want))) if want.size else 0.0, tol)
    if not np.isfinite(err) or err > bound:
        raise EdgediffError(f"exported denoiser differs from torch by {err:.3g} (> {bound:.3g}) on real inputs; "
                            "refusing the bundle: check the model for ops that export differently")
    return Parity(max_abs=err, rows=len(got), timesteps=ts, tolerance=bound)
