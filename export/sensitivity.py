"""Which convolutions int8 should leave in fp32: a sensitivity pass over a quantised denoiser.

Why: on the default model the ε error of static int8 is not spread evenly. Restoring one convolution at a time to
fp32 (its input activation and weight taken back from the fp32 graph, everything else int8) and measuring the ε
error again shows a few convolutions — the decoder's full-resolution ones and the skip halves feeding them — each
worth 2-5% of the error, and most worth nothing. Keeping the K most sensitive in fp32 buys most of the accuracy a
fully fp32 model would have for a fraction of its speed (benchmarks/results/int8_levers.json, "sensitivity" rows).

The pass costs one onnxruntime session per quantised convolution on a few hundred rows (seconds each), so it is
part of export. It ranks on rows drawn with their own seed, so the figures `int8_quality` later reports (on other
rows) are not the rows the choice was fitted to.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx

from edgediff.model_config import ModelConfig
from edgediff_export.calibration import RunData, denoiser_inputs
from edgediff_export.int8_quality import BANDS, band_errors, band_name, band_timesteps, cell_xt
from edgediff_export.onnx_export import run_rows, session

RANK_SEED_OFFSET = 13  # not int8_quality's row seed: rank on rows the reported figures do not use
OBSERVABLE = [band_name(b) for b in BANDS if b[0] >= 50]  # ε at t < 50 is nearly unobservable (int8_quality)


def quantised_convs(qmodel: onnx.ModelProto) -> list[str]:
    """Names of the convolutions that read at least one DequantizeLinear output (the ones int8 changed)."""
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in qmodel.graph.node if n.op_type in ("Conv", "ConvTranspose")
            and any(i in dq_outputs for i in n.input)]


def restore_conv(qmodel: onnx.ModelProto, prepared: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of `qmodel` in which convolution `name` computes in fp32: an input that came through Q→DQ reads the
    Q's fp32 input again; a weight or bias that came from an int8 initializer reads the fp32 tensor the prepared
    (pre-quantisation) graph gives the same node at the same position."""
    out = copy.deepcopy(qmodel)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    conv = next(n for n in graph.node if n.name == name)
    ref = next(n for n in prepared.graph.node if n.name == name)
    fp32_init = {i.name: i for i in prepared.graph.initializer}
    have = {i.name for i in graph.initializer}
    for k, inp in enumerate(conv.input):
        dq = producer.get(inp)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            conv.input[k] = q.input[0]
            continue
        init = copy.deepcopy(fp32_init[ref.input[k]])
        init.name = f"{ref.input[k]}__fp32"
        if init.name not in have:
            graph.initializer.append(init)
            have.add(init.name)
        conv.input[k] = init.name
    return out


def _observable_error(rel_by_band: dict[str, float]) -> float:
    return float(np.mean([rel_by_band[b] for b in OBSERVABLE]))


def rank_convs(fp32: Path, int8: Path, prepared: Path, data: RunData, config: ModelConfig, *, work: Path,
               seed: int = 0, images_per_t: int = 4) -> list[tuple[str, float]]:
    """Every quantised convolution with the ε error (mean relative error over the observable bands) the model has
    when that one convolution alone is restored to fp32; most sensitive (lowest remaining error) first."""
    inputs = denoiser_inputs(data, config, band_timesteps(), images_per_t=images_per_t,
                             seed=seed + RANK_SEED_OFFSET, null_fraction=0.2)
    ref_sess = session(fp32)
    eps_ref = run_rows(ref_sess, inputs)
    t = inputs["timestep"]
    x_t = cell_xt(inputs, ref_sess, eps_ref.shape)
    qmodel, prep = onnx.load(str(int8)), onnx.load(str(prepared))
    trial = work / "sensitivity_trial.onnx"
    ranked = []
    for name in quantised_convs(qmodel):
        onnx.save(restore_conv(qmodel, prep, name), str(trial))
        eps = run_rows(session(trial), inputs)
        ranked.append((name, _observable_error(band_errors(eps_ref, eps, x_t, t, config.schedule)["rel_error_by_band"])))
    return sorted(ranked, key=lambda item: item[1])
