"""Static QDQ int8 denoiser, per-channel weights, calibrated on real inputs spread over timesteps and grid cells.

Why static QDQ: dynamic int8 (ConvInteger) made this conv UNet 1.6-4.4x *slower* than fp32 on the target CPUs,
while static QDQ with per-channel weights runs the convs as int8 kernels (~2x faster at ~2% error on a conv stack,
REFERENCE.md). Diffusion activations drift with t (x_t goes from pure noise to an image) and with the cell, so the
calibration set covers 32 timesteps from 999 to 0 (options.CALIB_TIMESTEPS), every grid cell, real training
images, the image's own memory snippet or the null snippet.

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

import contextlib
import io
import logging
import platform
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig
from edgediff.cells import INPUT_NAMES
from edgediff_export.calibration import RunData, denoiser_inputs, take
from edgediff_export.options import CALIB_ROWS, CALIB_TIMESTEPS, DEFAULT_RECIPE


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

CONV_OPS = ("Conv", "ConvTranspose")


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


@dataclass(frozen=True)
class Recipe:
    """One way of making the int8 denoiser: the diffusion-aware levers, each measurable on its own.

    split_concat: quantise each input of a skip concatenation with its own scale (graph_edits.split_concat_convs);
    keep_fp32: "io" (first and last convolutions), "cond" (timestep/position/snippet MLPs) stay fp32;
    calibration: how activation ranges are picked from the calibration rows (minmax, percentile 99.99, entropy);
    band: calibrate on this [lo, hi] timestep band only (None: 32 timesteps from 999 to 0);
    weight_only: int8 weights + DequantizeLinear, fp32 activations (no calibration at all);
    conv_only: Q/DQ pairs only around convolutions (the ops with int8 kernels that pay): normalisation, resize,
    reshape and the condition Gemms stay fp32 instead of passing through 8 bits for no speed;
    fp32_conv_fraction: after a first quantisation, this fraction of the quantised convolutions (rounded), those whose
    int8 moves ε most (export/sensitivity.py), are quantised again as fp32 (mixed precision: accuracy bought where
    it is cheapest; a fraction rather than a count so that a small model keeps int8 convolutions too).
    """

    split_concat: bool = False
    keep_fp32: tuple[str, ...] = ()
    calibration: str = "minmax"
    band: tuple[int, int] | None = None
    weight_only: bool = False
    conv_only: bool = False
    fp32_conv_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.calibration not in ("minmax", "percentile", "entropy"):
            raise ValueError(f"calibration must be minmax, percentile or entropy, got {self.calibration!r}")
        if not 0.0 <= self.fp32_conv_fraction < 1.0:
            raise ValueError(f"fp32_conv_fraction must be in [0, 1), got {self.fp32_conv_fraction}")
        if set(self.keep_fp32) - {"io", "cond"}:
            raise ValueError(f"keep_fp32 holds 'io' and/or 'cond', got {self.keep_fp32}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_fp32"] = list(self.keep_fp32)
        d["band"] = None if self.band is None else list(self.band)
        return d


# "diffusion" is every lever that paid on the default model (benchmarks/results/int8_levers.json): int8 kernels for
# the convolutions only, skip concatenations split, first/last convolution fp32, 99.99th-percentile ranges, and the
# most sensitive 30% of the convolutions fp32 (12 on the default: ε error at t 100-399 3.2% → 1.4%, PSNR against fp32
# images 27.4 → 32.7 dB, per call 1.4-1.6x fp32's speed instead of 2.2-2.7x: int8_levers.json, default_int8.json).
SENSITIVE_FP32_FRACTION = 0.3
RECIPES = {
    "static": Recipe(),
    "diffusion": Recipe(conv_only=True, split_concat=True, keep_fp32=("io",), calibration="percentile",
                        fp32_conv_fraction=SENSITIVE_FP32_FRACTION),
    "weight-only": Recipe(weight_only=True),
}


def calibration_inputs(data: RunData, config: ModelConfig, seed: int = 0, band: tuple[int, int] | None = None, *,
                       timesteps: tuple[int, ...] = CALIB_TIMESTEPS,
                       max_rows: int = CALIB_ROWS) -> dict[str, np.ndarray]:
    """Real inputs at `timesteps` (or as many spread over `band`) × all cells, at most `max_rows` rows unless one
    image per timestep already exceeds it; a fifth with the null snippet."""
    ts = np.asarray(timesteps, dtype=np.int64) if band is None else np.unique(
        np.linspace(band[0], band[1], len(timesteps)).round().astype(np.int64))[::-1]
    per_t = max(1, max_rows // (len(ts) * config.num_cells))
    return denoiser_inputs(data, config, ts, images_per_t=per_t, seed=seed + 7, null_fraction=0.2)


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


def _quiet():
    """Swallow what onnxruntime's calibrators print() (five lines per pass, twice with the sensitivity pass): the
    export prints its own progress instead."""
    return contextlib.redirect_stdout(io.StringIO())


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
    with _quiet():
        ranges = quantizer.fit(dataset=rows, calibration_config=calib_config,
                               onnx_augmented_model_name=str(work / "augmented.onnx"), batch_size=32)
    out_dir = work / "optimum_out"
    produced = quantizer.quantize(qconfig, out_dir, file_suffix="int8", calibration_tensors_range=ranges)
    shutil.move(str(Path(produced) / f"{src.stem}_int8.onnx"), dst)


def _quantize_ort(src: Path, dst: Path, calib: dict[str, np.ndarray], preset: str, recipe: "Recipe",
                  keep: tuple[str, ...] = ()) -> Path:
    """Quantise `src` by `recipe` into `dst`, nodes named in `keep` left fp32; returns the prepared fp32 graph
    (after the recipe's edits) that was quantised, which the sensitivity pass reads fp32 weights from."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    p = PRESETS[preset]
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[recipe.calibration]
    model, exclude = _prepared(src, recipe)
    prepared = src.with_name(f"{src.stem}.prepared.onnx")
    onnx_save(model, prepared)
    with _quiet():
        quantize_static(
            str(prepared), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=False, activation_type=QuantType.QUInt8 if p["activations"] == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QUInt8 if p["weights"] == "uint8" else QuantType.QInt8,
            op_types_to_quantize=list(CONV_OPS if recipe.conv_only else OPERATORS), calibrate_method=method,
            nodes_to_exclude=sorted(set(exclude) | set(keep)),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "CalibPercentile": 99.99},
        )
    return prepared


def _quantize_mixed(src: Path, dst: Path, calib: dict[str, np.ndarray], preset: str, recipe: "Recipe",
                    fp32: Path, data: RunData, config: ModelConfig, seed: int,
                    log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Quantise fully, rank the quantised convolutions by how much ε error each one alone causes, quantise again
    with the most sensitive `recipe.fp32_conv_fraction` of them left fp32; returns their names (most sensitive
    first). Each of the three passes is announced in `log`: together they are most of an --int8 export's time."""
    import onnx

    from edgediff_export.sensitivity import rank_convs, restore_conv

    first = src.parent / "first_pass.int8.onnx"
    log("int8: calibrating and quantising every convolution (pass 1 of 2)")
    prepared = _quantize_ort(src, first, calib, preset, recipe)
    log("int8: ranking the convolutions by how much int8 moves ε, one at a time")
    ranked = rank_convs(fp32, first, prepared, data, config, work=src.parent, seed=seed)
    keep = [name for name, _ in ranked[: round(recipe.fp32_conv_fraction * len(ranked))]]
    log(f"int8: quantising again with the {len(keep)} most sensitive of {len(ranked)} convolutions fp32 (pass 2 of 2)")
    _quantize_ort(src, dst, calib, preset, recipe, keep=tuple(keep))
    # Excluded convs get fp32 weights, but an input tensor that other (int8) consumers share still reaches them
    # through its Q/DQ pair: read the fp32 tensor instead, as the ranking measured them.
    model, prep = onnx.load(str(dst)), onnx.load(str(prepared))
    for name in keep:
        model = restore_conv(model, prep, name)
    onnx_save(model, dst)
    return keep


def _prepared(src: Path, recipe: "Recipe"):
    """The model after the recipe's graph edits, and the nodes the recipe keeps in fp32."""
    import onnx

    from edgediff_export import graph_edits as ge

    model = onnx.load(str(src))
    exclude: list[str] = []
    if recipe.split_concat:
        model, keep = ge.split_concat_convs(model)
        exclude += keep
    if "io" in recipe.keep_fp32:
        exclude += ge.io_convs(model)
    if "cond" in recipe.keep_fp32:
        exclude += ge.condition_nodes(model)
    return model, sorted(set(exclude))


def onnx_save(model, path: Path) -> None:
    """One ONNX file, written atomically (the bundle stages it, a crash must not leave half a model)."""
    from edgediff.files import atomic_write_bytes

    atomic_write_bytes(path, model.SerializeToString())


def have_optimum() -> bool:
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_int8(fp32: Path, dst: Path, data: RunData, config: ModelConfig, *, seed: int = 0,
                  method: str = "ort", recipe: str | Recipe = DEFAULT_RECIPE,
                  calib_timesteps: tuple[int, ...] = CALIB_TIMESTEPS, calib_rows: int = CALIB_ROWS,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Write the int8 model to `dst` by `recipe` (a name of RECIPES or a Recipe), calibrated on real inputs at
    `calib_timesteps` (at most `calib_rows` rows); returns how it was made (the errors it causes are measured by
    int8_quality.measure_int8). `log` gets one line per pass, onnxruntime's own prints are swallowed."""
    preset = cpu_preset()
    name = recipe if isinstance(recipe, str) else "custom"
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise EdgediffError(f"unknown int8 recipe {recipe!r}; use one of {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    if method not in ("ort", "optimum"):
        raise ValueError(f"method must be 'ort' or 'optimum', got {method!r}")
    use_optimum = method == "optimum"
    if use_optimum and (recipe != Recipe() or not have_optimum()):
        raise EdgediffError("the optimum int8 path needs optimum-onnx and the plain static recipe: pip install "
                            "optimum-onnx (or use the default)")
    if recipe.weight_only:
        import onnx

        from edgediff_export.graph_edits import weight_only_int8

        onnx_save(weight_only_int8(onnx.load(str(fp32))), dst)
        return {"method": "weight-only int8 (DequantizeLinear)", "recipe": name, **recipe.to_dict(),
                "weights": "int8", "activations": "float32", "format": "QDQ weights", "per_channel": True}
    calib = calibration_inputs(data, config, seed=seed, band=recipe.band, timesteps=calib_timesteps,
                               max_rows=calib_rows)
    log(f"int8: recipe {name}, calibrating on {len(calib['timestep'])} real inputs at "
        f"{len(set(calib['timestep'].tolist()))} timesteps")
    work = Path(tempfile.mkdtemp(prefix="edgediff-int8-"))
    try:
        pre = _preprocess(fp32, work / "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for logger in ("optimum", "transformers", "root"):
                logging.getLogger(logger).setLevel(logging.ERROR)
            kept: list[str] = []
            if use_optimum:
                _quantize_optimum(pre, dst, calib, preset, work)
            elif recipe.fp32_conv_fraction:
                kept = _quantize_mixed(pre, dst, calib, preset, recipe, fp32, data, config, seed, log)
            else:
                _quantize_ort(pre, dst, calib, preset, recipe)
    except EdgediffError:
        raise
    except Exception as e:
        raise EdgediffError(f"int8 quantisation failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            "export without --int8 or rerun with --debug") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "method": "optimum ORTQuantizer" if use_optimum else "onnxruntime quantize_static", "recipe": name,
        **recipe.to_dict(), "preset": preset, **PRESETS[preset], "format": "QDQ", "per_channel": True,
        "calibration_rows": int(len(next(iter(calib.values())))),
        "calibration_timesteps": len(set(calib["timestep"].tolist())), "fp32_conv_names": kept,
    }
