"""Static QDQ int8 denoiser, per-channel weights, calibrated on real inputs spread over timesteps and grid cells.

Why static QDQ: dynamic int8 (ConvInteger) made this conv UNet 1.6-4.4x *slower* than fp32 on the target CPUs,
while static QDQ with per-channel weights runs the convs as int8 kernels (~2x faster at ~2% error on a conv stack,
REFERENCE.md). Diffusion activations drift with t (x_t goes from pure noise to an image) and with the cell, so the
calibration set covers `CALIB_TIMESTEPS` timesteps from 999 to 0, every grid cell, real training images, the
image's own memory snippet or the null snippet.

Front end: optimum's `ORTQuantizer` was tried first. It serves as a *source of presets*, not as the tool: its
per-CPU `AutoQuantizationConfig` (avx512_vnni / avx512 / avx2 / arm64) fixes the tested per-ISA choices (u8 vs s8
weights, symmetric weights, which operators get QDQ pairs), and `PRESETS` below copies them (a test holds them equal
to optimum's when optimum-onnx is installed). The quantisation itself goes to onnxruntime's `quantize_static`,
which is what ORTQuantizer calls underneath, because ORTQuantizer's calibration API is built around a HF
`datasets.Dataset`, it imports transformers (measured here: 60-90 s of import on the shared 2-core box, more than
the whole fp32 export) and it pins transformers < 4.58. `method="optimum"` still runs the real ORTQuantizer with
the same preset and the same calibration rows (used by the benchmark and a test to show the two agree). Both see the
model after `quant_pre_process(skip_symbolic_shape=True)` (symbolic shape inference fails on dynamo exports).
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.models.config import ModelConfig
from edgediff.interface import INPUT_NAMES
from edgediff_export.inputs import RunData, denoiser_inputs, take
from edgediff_export.onnx_export import ort_outputs

CALIB_TIMESTEPS = np.linspace(999, 0, 32).round().astype(np.int64)
CALIB_ROWS = 1024  # upper bound on calibration rows (t × images × cells)


# optimum 2.1's AutoQuantizationConfig.<preset>(is_static=True, per_channel=True), copied (see module docstring)
PRESETS = {
    "avx2": {"activations": "uint8", "weights": "uint8"},
    "avx512": {"activations": "uint8", "weights": "int8"},
    "avx512_vnni": {"activations": "uint8", "weights": "int8"},
    "arm64": {"activations": "uint8", "weights": "int8"},
}
OPERATORS = ("Conv", "ConvTranspose", "Gemm", "Clip", "Relu", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
             "Flatten", "Resize", "MaxPool", "AveragePool", "Slice", "Pad", "MatMul", "Split", "Gather",
             "GatherElements", "Where", "InstanceNormalization", "LayerNormalization", "BatchNormalization", "TopK",
             "CumSum")


def cpu_preset() -> str:
    """The optimum preset that fits this CPU: what its int8 kernels can use."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = set(" ".join(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except OSError:
        flags = set()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def calibration_inputs(data: RunData, config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Real inputs at 32 timesteps × all cells; about a fifth with the null snippet (as in training)."""
    per_t = max(1, CALIB_ROWS // (len(CALIB_TIMESTEPS) * config.num_cells))
    return denoiser_inputs(data, config, CALIB_TIMESTEPS, images_per_t=per_t, seed=seed + 7, null_fraction=0.2)


def _rows(inputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per-sample dicts (no batch axis): the form optimum's calibration reader stacks into batches."""
    n = len(inputs["patch"])
    return [{k: inputs[k][i] for k in INPUT_NAMES} for i in range(n)]


class _Reader:
    """onnxruntime CalibrationDataReader over fixed batches of our real inputs."""

    def __init__(self, inputs: dict[str, np.ndarray], batch: int = 32):
        n = len(inputs["patch"])
        self._batches = iter([take(inputs, slice(s, s + batch)) for s in range(0, n, batch)])

    def get_next(self):
        return next(self._batches, None)


def _preprocess(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def _quantize_optimum(src: Path, dst: Path, calib: dict[str, np.ndarray], preset: str, work: Path) -> None:
    from optimum.onnxruntime import ORTQuantizer
    from onnxruntime.quantization import CalibrationMethod
    from optimum.onnxruntime.configuration import AutoQuantizationConfig, CalibrationConfig

    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=True, per_channel=True)
    quantizer = ORTQuantizer.from_pretrained(src.parent, file_name=src.name)
    rows = _rows(calib)
    # AutoCalibrationConfig.minmax only reads a `datasets.Dataset`'s name fields; the calibration itself just
    # iterates dicts, so our real inputs go in as a list and the config is spelled out.
    calib_config = CalibrationConfig(dataset_name="edgediff-real-inputs", dataset_config_name="timesteps-x-cells",
                                     dataset_split="train", dataset_num_samples=len(rows),
                                     method=CalibrationMethod.MinMax, moving_average=False)
    ranges = quantizer.fit(dataset=rows, calibration_config=calib_config,
                           onnx_augmented_model_name=str(work / "augmented.onnx"), batch_size=32)
    out_dir = work / "optimum_out"
    produced = quantizer.quantize(qconfig, out_dir, file_suffix="int8", calibration_tensors_range=ranges)
    shutil.move(str(Path(produced) / f"{src.stem}_int8.onnx"), dst)


def _quantize_ort(src: Path, dst: Path, calib: dict[str, np.ndarray], preset: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    p = PRESETS[preset]
    quantize_static(
        str(src), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
        activation_type=QuantType.QUInt8 if p["activations"] == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QUInt8 if p["weights"] == "uint8" else QuantType.QInt8,
        op_types_to_quantize=list(OPERATORS), calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


def have_optimum() -> bool:
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_int8(fp32: Path, dst: Path, data: RunData, config: ModelConfig, check_inputs: dict[str, np.ndarray],
                  *, seed: int = 0, method: str = "ort") -> dict:
    """Write the int8 QDQ model to `dst`; returns its error against fp32 on `check_inputs` and how it was made."""
    preset = cpu_preset()
    if method not in ("ort", "optimum"):
        raise ValueError(f"method must be 'ort' or 'optimum', got {method!r}")
    use_optimum = method == "optimum"
    if use_optimum and not have_optimum():
        raise EdgediffError("the optimum int8 path needs optimum-onnx: pip install optimum-onnx (or use the default)")
    calib = calibration_inputs(data, config, seed=seed)
    work = Path(tempfile.mkdtemp(prefix="edgediff-int8-"))
    try:
        pre = _preprocess(fp32, work / "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("optimum", "transformers", "root"):
                logging.getLogger(name).setLevel(logging.ERROR)
            if use_optimum:
                _quantize_optimum(pre, dst, calib, preset, work)
            else:
                _quantize_ort(pre, dst, calib, preset)
    except EdgediffError:
        raise
    except Exception as e:
        raise EdgediffError(f"int8 quantisation failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            "export without --int8 or rerun with --debug") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    want = ort_outputs(fp32, check_inputs)
    got = ort_outputs(dst, check_inputs)
    diff = got - want
    return {
        "method": "optimum ORTQuantizer" if use_optimum else "onnxruntime quantize_static",
        "preset": preset, **PRESETS[preset], "format": "QDQ", "per_channel": True, "calibration": "minmax",
        "calibration_rows": int(len(calib["patch"])), "calibration_timesteps": len(CALIB_TIMESTEPS),
        "max_abs": float(np.abs(diff).max()),
        "rel_error": float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-12)),
        "rows_checked": int(len(want)),
    }
