"""The int8 levers' graph edits and the int8 measurement, on a real (tiny) trained UNet's exported fp32 ONNX.

Each edit must leave the fp32 function unchanged (split) or change it by no more than int8 weight rounding
(weight-only), and the node selections must find the layers they name from the graph's structure alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgediff_export import graph_edits as ge
from edgediff_export.calibration import denoiser_inputs
from edgediff_export.int8_quality import band_errors, bundle_run_data, psnr, rel, run_rows, session
from edgediff.schedule import Schedule


@pytest.fixture(scope="module")
def fp32(bundle) -> Path:
    return bundle / "denoiser.onnx"


@pytest.fixture(scope="module")
def real_inputs(bundle):
    """Real inputs as a bundle without its run gets them: the dataset the manifest names + the LUT's snippets."""
    from edgediff.bundle import read_manifest

    data, config = bundle_run_data(bundle, data=read_manifest(bundle).training["data"], max_images=16)
    return denoiser_inputs(data, config, [999, 400, 50, 0], images_per_t=2, null_fraction=0.25)


def _run(model: onnx.ModelProto, tmp: Path, inputs) -> np.ndarray:
    path = tmp / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return run_rows(session(path), inputs)


def test_split_concat_convs_is_exact_in_fp32_and_splits_every_skip_conv(fp32, real_inputs, tmp_path):
    model = onnx.load(str(fp32))
    split, keep_float = ge.split_concat_convs(model)
    convs = [n for n in split.graph.node if n.op_type == "Conv"]
    fed_by_concat = {n.input[0] for n in model.graph.node if n.op_type == "Conv"} & \
        {n.output[0] for n in model.graph.node if n.op_type == "Concat"}
    assert fed_by_concat and not any(n.input[0] in fed_by_concat for n in convs)  # no conv reads a concat any more
    assert len(convs) == sum(1 for n in model.graph.node if n.op_type == "Conv") + len(fed_by_concat)
    assert keep_float  # the concatenations' other consumers (the norms) stay float
    want = run_rows(session(fp32), real_inputs)
    got = _run(split, tmp_path, real_inputs)
    assert np.abs(got - want).max() < 1e-4


def test_io_convs_and_condition_nodes_are_found_by_structure(fp32):
    model = onnx.load(str(fp32))
    g = model.graph
    io = ge.io_convs(model)
    prod = {o: n for n in g.node for o in n.output}
    assert prod[g.output[0].name].name in io  # the last conv writes ε
    first = [n for n in g.node if n.op_type == "Conv"][0]
    assert first.name in io and len(io) == 2
    cond = set(ge.condition_nodes(model))
    assert {n.name for n in g.node if n.op_type == "Gemm"} <= cond  # every MLP of the UNet is on the condition path
    assert not any(n.op_type == "Conv" for n in g.node if n.name in cond)


def test_weight_only_int8_stores_int8_weights_and_stays_close(fp32, real_inputs, tmp_path):
    model = onnx.load(str(fp32))
    wo = ge.weight_only_int8(model)
    floats = {i.name: i for i in model.graph.initializer}
    ints = {i.name: i for i in wo.graph.initializer}
    dq = [n for n in wo.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(ints[n.input[0]].data_type == onnx.TensorProto.INT8 for n in dq)
    replaced = [n.input[0].removesuffix("__q") for n in dq]
    assert not set(replaced) & set(ints)  # the float copies are gone: the weights are held once, as int8
    assert sum(len(ints[n.input[0]].raw_data) for n in dq) * 4 == sum(len(floats[r].raw_data) for r in replaced)
    want = run_rows(session(fp32), real_inputs)
    got = _run(wo, tmp_path, real_inputs)
    t = real_inputs["timestep"]
    assert rel(got[t >= 100] - want[t >= 100], want[t >= 100]) < 0.03


def test_band_errors_separate_the_unobservable_end_from_the_rest():
    rng = np.random.default_rng(0)
    t = np.repeat([999, 400, 10], 8)
    eps = rng.standard_normal((24, 3, 4, 4)).astype(np.float32)
    x_t = rng.standard_normal((24, 3, 4, 4)).astype(np.float32)
    noisy = eps + 0.1 * (t == 10)[:, None, None, None] * rng.standard_normal(eps.shape).astype(np.float32)
    r = band_errors(eps, noisy, x_t, t, Schedule())
    assert r["rel_error_by_band"]["400-699"] == 0 and r["rel_error_by_band"]["0-49"] > 0.05
    assert r["x0_rel_error_by_band"]["0-49"] < r["rel_error_by_band"]["0-49"] / 5  # √(1−ᾱ) is small near t = 0
    assert "50-99" not in r["rel_error_by_band"]  # no rows there: no figure, rather than a made-up zero
    a = np.zeros((2, 4, 4, 3), np.uint8)
    assert psnr(a, a) == 99.0 and psnr(a, a + 1) == pytest.approx(20 * np.log10(255), abs=1e-6)


def test_restoring_every_quantised_conv_gives_back_the_fp32_function(fp32, real_inputs, bundle, tmp_path):
    """The sensitivity pass's one edit (export/sensitivity.restore_conv) must make a conv read fp32 inputs: the very
    fp32 weights and the activation before its Q/DQ pair (the Q/DQ on a conv's *output* belongs to its consumers and
    stays). With every conv restored, the model is closer to fp32; the ranking covers every quantised conv,
    most sensitive first."""
    from edgediff_export.int8_quality import bundle_run_data
    from edgediff_export.quantize import Recipe, _preprocess, _quantize_ort, calibration_inputs
    from edgediff_export.sensitivity import quantised_convs, rank_convs, restore_conv
    from edgediff.bundle import read_manifest

    data, config = bundle_run_data(bundle, data=read_manifest(bundle).training["data"], max_images=16)
    pre = _preprocess(fp32, tmp_path / "pre.onnx")
    q8 = tmp_path / "q8.onnx"
    prepared = _quantize_ort(pre, q8, calibration_inputs(data, config), "avx512_vnni", Recipe(conv_only=True))
    qmodel, prep = onnx.load(str(q8)), onnx.load(str(prepared))
    names = quantised_convs(qmodel)
    assert len(names) == sum(1 for n in prep.graph.node if n.op_type == "Conv")
    restored = qmodel
    for name in names:
        restored = restore_conv(restored, prep, name)
    assert quantised_convs(restored) == []
    fp32_weights = {i.name: i for i in prep.graph.initializer}
    restored_inits = {i.name: i for i in restored.graph.initializer}
    for node in (n for n in restored.graph.node if n.name in names):
        weight = restored_inits[node.input[1]]
        assert weight.raw_data == fp32_weights[node.input[1].removesuffix("__fp32")].raw_data
    want = run_rows(session(fp32), real_inputs)
    err_restored = rel(_run(restored, tmp_path, real_inputs) - want, want)
    err_int8 = rel(_run(qmodel, tmp_path, real_inputs) - want, want)
    assert err_restored < 0.8 * err_int8
    ranked = rank_convs(fp32, q8, prepared, data, config, work=tmp_path, images_per_t=1)
    assert sorted(n for n, _ in ranked) == sorted(names)
    errors = [e for _, e in ranked]
    assert errors == sorted(errors) and errors[-1] > errors[0]
