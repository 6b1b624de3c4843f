"""The benchmark arithmetic that turns measurements into claims: the liveness floor and the quality ratios."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from benchmarks.common import run_fresh  # noqa: E402
from benchmarks.peak_floor import floor_mb, live_activation_peak  # noqa: E402
from benchmarks.peak_report import summarize as summarize_peak  # noqa: E402
from edgediff.units import MIB  # noqa: E402
from benchmarks.quality import plan_rows, summarize as summarize_quality  # noqa: E402


def _model(tmp_path):
    """x[batch,4] → a=Relu(x) → b=Relu(a) → c=a+b → y=c*w2, with w2=Identity(w) computable from weights alone."""
    w = numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Identity", ["w"], ["w2"]),
        helper.make_node("Mul", ["c", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_liveness_counts_only_simultaneously_live_activations(tmp_path):
    g = live_activation_peak(_model(tmp_path))
    # x dies after the first Relu; at the Add a, b and c (16 bytes each) are live; at the Mul c and y are.
    assert g["activation_peak_bytes"] == 48
    assert g["initializer_bytes"] == 16
    assert g["unknown_shapes"] == 0
    assert g["peak_node"].startswith("Add")


def test_liveness_scales_with_batch(tmp_path):
    assert live_activation_peak(_model(tmp_path), batch=3)["activation_peak_bytes"] == 3 * 48


def test_floor_adds_baseline_weights_two_images_and_activations():
    graph = {"initializer_bytes": 2 * MIB, "activation_peak_bytes": 3 * MIB}
    images = 2 * 3 * 64 * 64 * 4 / MIB
    assert floor_mb(50.0, graph, 64) == pytest.approx(50.0 + 2 + 3 + images)


def test_peak_summary_compares_lowest_edgediff_with_diffusers():
    rows = [
        {"tool": "diffusers", "resolution": 512, "grid": 1, "precision": "fp32", "peak_mb": 1000.0, "s_per_step": 2.0},
        {"tool": "edgediff", "resolution": 512, "grid": 1, "precision": "fp32", "budget": "floor", "peak_mb": 900.0,
         "floor_mb": 800.0, "measured_over_floor": 1.125, "s_per_step": 1.0},
        {"tool": "edgediff", "resolution": 512, "grid": 8, "precision": "int8", "budget": "floor", "peak_mb": 90.0,
         "floor_mb": 80.0, "measured_over_floor": 1.125, "s_per_step": 3.0},
    ]
    s = summarize_peak(rows)["512"]
    assert s["lowest_peak"]["grid"] == 8
    assert s["peak_ratio_lowest_vs_diffusers"] == pytest.approx(0.09)
    assert s["time_ratio_fastest_fp32_vs_diffusers"] == pytest.approx(0.5)


def test_quality_rows_cover_every_comparison_and_ratios_use_the_full_image_model():
    core = {(r["grid"], r["precision"], r["bank"]) for r in plan_rows(dict(grids=[1, 2, 4], int8=True))}
    # each comparison of the issue once: grids at fp32+LUT, and at grid 2 int8, the float bank and no bank
    assert core == {(1, "fp32", "lut"), (2, "fp32", "lut"), (4, "fp32", "lut"), (2, "int8", "lut"),
                    (2, "fp32", "float"), (2, "fp32", "none")}
    every = plan_rows(dict(grids=[1, 2, 4], int8=True, matrix="all"))
    assert len(every) == 3 * 2 * 2 + 2
    scored = [dict(grid=1, precision="fp32", bank="lut", fd_lite0=10.0, seam=math.nan),
              dict(grid=2, precision="fp32", bank="lut", fd_lite0=10.5, seam=1.1),
              dict(grid=4, precision="fp32", bank="lut", fd_lite0=12.0, seam=1.3)]
    summary = summarize_quality(scored)
    assert scored[1]["fd_vs_full"] == pytest.approx(1.05)
    assert summary["goal_fd_within_10pct"] == {"grid2": pytest.approx(1.05), "grid4": pytest.approx(1.2)}


def test_guided_quality_rows_are_compared_with_the_guided_full_image_model():
    rows = plan_rows(dict(grids=[1, 2], int8=False, guidance=3.0))
    guided = {(r["grid"], r["precision"], r["bank"]) for r in rows if r["guidance"] == 3.0}
    assert guided == {(1, "fp32", "lut"), (2, "fp32", "lut")}
    assert len({(r["run"], r["precision"], r["bank"], r["guidance"]) for r in rows}) == len(rows)
    scored = [dict(grid=1, precision="fp32", bank="lut", guidance=1.0, fd_lite0=10.0, seam=math.nan),
              dict(grid=1, precision="fp32", bank="lut", guidance=3.0, fd_lite0=8.0, seam=math.nan),
              dict(grid=2, precision="fp32", bank="lut", guidance=1.0, fd_lite0=11.0, seam=1.5),
              dict(grid=2, precision="fp32", bank="lut", guidance=3.0, fd_lite0=8.8, seam=1.1)]
    summary = summarize_quality(scored)
    assert scored[3]["fd_vs_full"] == pytest.approx(1.1)  # against the guided grid-1 row, not the plain one
    assert summary["goal_seam_le_1.2_guidance3"] == {"grid2": 1.1}
    assert summary["goal_seam_le_1.2"] == {"grid2": 1.5}


def test_memory_ablation_result_is_rebuilt_from_partial_scores_with_per_metric_speedups():
    from benchmarks.memory_ablation import ARMS, build_result, speedup

    assert speedup([100, 200, 400], [9, 5, 3], [100, 200, 400], [10, 8, 6]) == (2.0, 200)  # reaches 6 at 200
    assert speedup([100, 200], [9, 7], [100, 200], [10, 6]) == (None, None)
    assert speedup([100], [5], [100, 200, 400], [10, 8, 6]) == (4.0, 100)  # a lagging arm already below 6
    steps = [100, 200, 400]
    fd = {"plain": [10, 8, 6], "bank": [5, 4, 3], "bank_gmem": [12, 11, 10], "align": [7, 6], "bank_align": [8]}
    ind = {"plain": [20, 18, 16], "bank": [19, 15, 14], "bank_gmem": [15, 12, 11], "align": [21, 20],
           "bank_align": [30]}
    scores = {a: {s: {"fd_lite0": fd[a][i], "fd_independent": ind[a][i], "kid": 0.1, "kid_independent": 0.2,
                      "loss_last50": 0.1, "train_seconds": 1.0} for i, s in enumerate(steps[: len(fd[a])])}
              for a in ARMS}
    r = build_result(scores, steps, {}, "net")
    assert r["steps"] == [100] and not r["complete"]  # only step 100 is measured for every arm
    rows = {a["name"]: a for a in r["arms"]}
    assert rows["align"]["steps_done"] == [100, 200] and rows["bank_align"]["fd_lite0"] == [8]
    assert rows["bank"]["speedup_lite0"] == 4.0 and rows["bank"]["speedup_independent"] == 2.0
    assert rows["bank_gmem"]["speedup_lite0"] is None and rows["bank_gmem"]["speedup_independent"] == 4.0
    assert rows["align"]["speedup_lite0"] == 2.0  # 6 <= plain's final 6 at step 200
    assert rows["bank_align"]["speedup_independent"] is None  # 30 > plain's final 16
    assert r["speedup"] == 4.0 and r["speedup_arm"] == "bank_gmem"  # the best memory arm, in the independent metric
    assert r["metric_independent"] == "net"
    assert set(rows["plain"]) >= {"name", "fd_lite0", "fd_independent", "kid_lite0", "kid_independent",
                                  "speedup_lite0", "speedup_independent"}


def test_fresh_process_results_come_back_and_failures_carry_the_child_stderr():
    child = "import sys; from benchmarks.common import emit; print('chatter'); emit({'x': int(sys.argv[1])}); print('more')"
    assert run_fresh(None, [7], code=child) == {"x": 7}
    assert run_fresh(None, [], code="import json; print('a'); print(json.dumps({'last': 1}))") == {"last": 1}
    with pytest.raises(RuntimeError, match=r"exit 3\): .*the child says why"):
        run_fresh(None, [], code="import sys; print('{}'); sys.stderr.write('the child says why\\n'); sys.exit(3)")
    with pytest.raises(ValueError):
        run_fresh("benchmarks.peak_memory", [], code="pass")


def test_scale_ratios_are_cell_model_over_full_image_model():
    from benchmarks.scale import summarize

    def row(fd_ind, fd_lite, peak, s_img, s_train):
        return {"quality": {"fd_independent": fd_ind, "fd_lite0": fd_lite},
                "memory": {"n16": {"peak_mb": peak, "s_per_image": s_img}},
                "training": {"train_s_per_1000_steps": s_train}}

    got = summarize(row(60.0, 80.0, 90.0, 3.0, 1500.0), row(120.0, 100.0, 300.0, 1.5, None))
    assert got == {"fd_independent_vs_full": 0.5, "fd_lite0_vs_full": 0.8, "peak_vs_full_image": 0.3,
                   "s_per_image_vs_full": 2.0, "train_s_per_1000_vs_full": None}


def test_scale_takes_the_training_cost_of_the_pair_that_trained_side_by_side_only_for_the_same_steps(tmp_path):
    from benchmarks.scale import training_from
    from edgediff.errors import EdgediffError

    prior = tmp_path / "scale_before.json"
    prior.write_text(json.dumps({"patch": {"training": {"train_steps": 6400, "train_seconds": 14445.0}},
                                 "full": {"training": {"train_steps": 820, "train_seconds": 14475.0}}}))
    patch = {"training": {"train_steps": 6400, "train_seconds": 14445.0}}
    full = {"training": {"train_steps": 820, "train_seconds": 5200.0}}  # retrained on two threads, with pauses
    training_from(prior, patch, full)
    assert full["training"]["train_seconds"] == 14475.0 and full["training"]["source"].endswith("scale_before.json")
    with pytest.raises(EdgediffError, match="820 steps, this one 700"):
        training_from(prior, patch, {"training": {"train_steps": 700, "train_seconds": 1.0}})


def test_pair_arm_reads_its_checkpoint_and_a_measured_eval_back_without_sampling(run_dir, tmp_path):
    from benchmarks.run_pair import ratio, recorded_training, score_arm

    training = recorded_training(run_dir)
    assert training["step"] == 40 and training["memory"] and not training["position_map"]
    measured = {"fd_independent": 300.0, "fd_lite0": 320.0, "seam_border": 1.2, "guidance": 3.0, "unused": 1}
    (tmp_path / f"{run_dir.name}_n8_s0_g3.json").write_text(json.dumps(measured))
    row, sheet = score_arm(run_dir, 8, tmp_path, 3.0)  # a fresh eval would take minutes and write the JSON anew
    assert row["quality"]["fd_independent"] == 300.0 and "unused" not in row["quality"]
    assert row["quality"]["kid"] is None and sheet == tmp_path / f"{run_dir.name}_n8_s0_g3.png"
    other = {"quality": {"fd_independent": 400.0}}
    assert ratio({"a": row, "b": other}, "a", "b") == 0.75


def test_layout_snr_shift_4_puts_128_px_cells_where_the_32_px_default_is():
    from benchmarks.layout_snr import pooled_snr_row

    small, plain, shifted = pooled_snr_row(2, 1.0), pooled_snr_row(8, 1.0), pooled_snr_row(8, 4.0)
    assert plain["share_of_timesteps_legible"] > small["share_of_timesteps_legible"] + 0.1
    assert {k: v for k, v in shifted.items() if k not in ("pool", "shift")} == \
        {k: v for k, v in small.items() if k not in ("pool", "shift")}


def test_cascade_picks_the_row_with_the_lowest_fd_independent_and_compares_it_with_both_controls():
    from benchmarks.cascade import summarize

    table = [{"row": "upscaled base", "fd_independent": 200.0}, {"row": "strength 0.3", "strength": 0.3,
             "cell_shift": 0, "fd_independent": 175.0, "seam_border": 1.05}, {"row": "strength 0.3, cell shift 8",
             "strength": 0.3, "cell_shift": 8, "fd_independent": 170.0, "seam_border": 1.2},
             {"row": "strength 0.5", "strength": 0.5, "fd_independent": 180.0, "seam_border": 1.0},
             {"row": "from noise", "fd_independent": 340.0}]
    assert summarize(table) == {"best_row": "strength 0.3, cell shift 8", "best_strength": 0.3, "best_cell_shift": 8,
                                "best_vs_upscaled_base": 0.85, "best_vs_from_noise": 0.5,
                                "best_seamless_row": "strength 0.3"}
    assert summarize(table[:4])["best_vs_from_noise"] is None
    assert summarize(table[:1] + [table[2]])["best_seamless_row"] is None


def test_compact_png_keeps_every_pixel_of_a_figure_with_few_colours(tmp_path):
    from PIL import Image

    from benchmarks.common import compact_png

    rng = np.random.default_rng(0)
    pixels = rng.choice(np.array([[255, 255, 255], [31, 119, 180], [0, 0, 0]], dtype=np.uint8), size=(64, 96))
    path = tmp_path / "fig.png"
    Image.fromarray(pixels).save(path)
    before = path.stat().st_size
    compact_png(path)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pixels)
    assert path.stat().st_size < before
    assert not list(tmp_path.glob("*.tmp.png"))


def test_more_steps_rows_name_the_steps_and_the_warm_start_their_weights_come_from():
    from benchmarks.more_steps import training_record
    from edgediff.bundle import DEFAULT_BUNDLE

    rec = training_record(DEFAULT_BUNDLE)
    assert rec["steps"] == 8000 and rec["lr"] == 0.0003 and rec["init_from"] == "edgediff/default_bundle"
    assert "--init-from" in rec["command"]


def test_eta_rows_take_an_optional_guidance_and_default_to_the_bundles():
    from benchmarks.eta import parse_rows

    assert parse_rows("0:25,1:50") == [(0.0, 25, None), (1.0, 50, None)]
    assert parse_rows("1:25:4.5") == [(1.0, 25, 4.5)]


def test_cpu_bf16_trains_the_default_recipe_differing_only_in_width_steps_and_precision():
    """The speed-up is quoted for the emoji-32 recipe: the benchmark's runs must be that recipe."""
    import re
    from pathlib import Path

    from benchmarks.cpu_bf16 import WIDTHS, recipe
    from benchmarks.more_steps import training_record
    from edgediff.bundle import DEFAULT_BUNDLE

    drop = r" --(steps|init-from|out|precision) \S+"
    shipped = re.sub(drop, "", training_record(DEFAULT_BUNDLE)["command"])
    ours = recipe(Path("RUN"), WIDTHS["unet-m"], "bf16", 10)
    ours.validate()
    assert re.sub(drop, "", ours.command()) == shipped
    assert "--precision bf16" in ours.command()


def test_larger_base_rows_carry_the_widths_and_parameter_count_each_run_trained(run_dir):
    from benchmarks.larger_base import widths
    from edgediff.checkpoint import load_ema_model
    from edgediff.models import count_params

    model, config, _ = load_ema_model(run_dir)
    got = widths(run_dir)
    assert got["params"] == count_params(model) and got["dim"] == config.dim and got["mults"] == list(config.mults)


def test_larger_base_matches_pairs_on_steps_or_on_quiet_cpu_time():
    from benchmarks.larger_base import comparison, quiet_seconds

    def row(step, dim, fd):
        return {"training": {"step": step}, "quiet_cpu_seconds": quiet_seconds(step, dim),
                "quality": {"fd_independent": fd, "fd_lite0": fd, "kid_independent": fd}}

    large = row(1000, 64, 200.0)
    same_steps, same_time, neither = (comparison(large, row(s, 40, 400.0)) for s in (1000, 1800, 3000))
    assert same_steps["same"] == "steps" and same_steps["fd_independent"] == 0.5
    assert same_time["same"] == "time" and neither["same"] is None


def test_base_swap_divides_by_the_recorded_base_and_puts_each_rows_sheet_side_by_side(tmp_path):
    from PIL import Image

    from benchmarks.base_swap import KEYS, ratios, save_sheets
    from edgediff.images import make_grid

    def scores(fd):
        return {k: fd for k in KEYS}

    recorded = {"base_32px": scores(60.0), "cascade_128px": scores(160.0)}
    candidate = {"base_32px": scores(30.0), "cascade_128px": scores(200.0)}
    got = ratios(candidate, recorded)
    assert got["base_32px"]["fd_independent"] == 0.5 and got["cascade_128px"]["kid_independent"] == 1.25
    dark, light = np.zeros((16, 8, 8, 3), np.uint8), np.full((16, 8, 8, 3), 200, np.uint8)
    strip = np.asarray(Image.open(save_sheets([dark, light], tmp_path / "s.png", gap=6)).convert("RGB"))
    one = make_grid(dark, nrow=4)
    assert strip.shape == (one.shape[0], 2 * one.shape[1] + 6, 3)
    assert np.array_equal(strip[:, : one.shape[1]], one)
    assert np.array_equal(strip[:, -one.shape[1]:], make_grid(light, nrow=4))


def test_base_swap_reports_a_bases_int8_file_with_the_gates_verdict():
    from benchmarks.base_swap import int8_summary

    bands = {"100-399": 0.01, "400-699": 0.005}
    fd = {"fd_lite0": {"fp32": 70.0, "int8": 70.7, "rel": 0.01},
          "fd_independent": {"fp32": 43.0, "int8": 43.4, "rel": 0.009}}
    passing = {"recipe": "weight-only", "psnr_vs_fp32_db": 41.0, "rel_error_by_band": bands, "fd_delta": fd}
    failing = {**passing, "fd_delta": {**fd, "fd_independent": {"fp32": 43.0, "int8": 46.0, "rel": 0.07}}}
    assert int8_summary(None) is None
    ok, bad = int8_summary(passing), int8_summary(failing)
    assert ok["gate_failures"] == [] and ok["fd_delta_rel"] == {"fd_lite0": 0.01, "fd_independent": 0.009}
    assert bad["gate_failures"] == ["fd_independent +7.0% (> 3%)"] and bad["recipe"] == "weight-only"
