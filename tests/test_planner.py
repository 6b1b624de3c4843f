"""The budget planner on synthetic manifests and profiles (no model, no onnxruntime session): fast and exact."""

from __future__ import annotations

import pytest

from edgediff.bundle import FileEntry, LutSpec, Manifest, MemoryProfile, TensorSpec, VariantProfile
from edgediff.errors import EdgediffError
from edgediff.schedule import Schedule
from edgediff.runtime.estimates import activation_mb, buffers_mb, estimate_mb
from edgediff.runtime.planner import BudgetError, plan_sampling

SHA = "0" * 64


def manifest(image_size=64, grid=4, int8=False, lut_entries=100) -> Manifest:
    files = {"denoiser_fp32": FileEntry("denoiser.onnx", SHA, 10)}
    if int8:
        files["denoiser_int8"] = FileEntry("denoiser.int8.onnx", SHA, 5)
    return Manifest(
        schema_version=1, image_size=image_size, channels=3, grid=grid, patch_size=image_size // grid,
        snippet_dim=16, backbone="unet", params=1000, schedule=Schedule(),
        prediction="epsilon", inputs=[TensorSpec("patch", "float32", ["batch", 3, 16, 16])],
        outputs=[TensorSpec("eps", "float32", ["batch", 3, 16, 16])], files=files,
        lut=LutSpec(entries=lut_entries, dim=16, subvectors=4), memory_profile=None)


def profile(int8=False, fast=True) -> MemoryProfile:
    v = {"fp32": VariantProfile(resident_mb=40.0, activation_mb={"1": 10.0, "2": 18.0, "4": 34.0},
                                ms_per_call={"1": 10.0, "2": 16.0, "4": 28.0})}
    if fast:
        v["fp32@fast"] = VariantProfile(resident_mb=45.0, activation_mb={"1": 12.0, "2": 22.0, "4": 42.0},
                                        ms_per_call={"1": 6.0, "2": 10.0, "4": 18.0})
    if int8:
        v["int8"] = VariantProfile(resident_mb=12.0, activation_mb={"1": 5.0, "2": 9.0, "4": 17.0},
                                   ms_per_call={"1": 5.0, "2": 8.0, "4": 14.0})
    return MemoryProfile(baseline_mb=50.0, variants=v, settings={"load_peak_mb": {"fp32@fast": 70.0}})


def plan(budget, **kw):
    args = dict(n=4, now_mb=60.0, budget_mb=budget)
    args.update(kw)
    m = args.pop("m", manifest())
    p = args.pop("p", profile())
    return plan_sampling(m, p, **args)


def test_below_the_floor_is_refused_with_the_budget_that_works():
    with pytest.raises(BudgetError) as e:
        plan(80.0)
    msg = str(e.value)
    assert "--memory-budget 80.0 MiB is too small" in msg and "pass --memory-budget" in msg
    floor = e.value.floor_mb
    assert floor > 80 and f"pass --memory-budget {int(floor)}MiB or more" in msg
    assert "\n" not in msg
    ok = plan(floor)  # the named budget is accepted
    assert ok.estimate_mb <= floor and ok.cells_per_call == 1 and ok.images_per_pass == 1


def test_every_accepted_plan_fits_and_more_budget_never_plans_slower():
    floor = plan(None).floor_mb
    last_ms = float("inf")
    for factor in (1.0, 1.2, 1.5, 2.0, 3.0, 6.0):
        p = plan(floor * factor + 0.5)
        assert p.estimate_mb <= p.budget_mb
        assert p.est_ms_per_step <= last_ms
        last_ms = p.est_ms_per_step
    assert plan(floor * 6).cells_per_call > 1


def test_floor_is_the_sum_of_its_parts():
    m, p = manifest(), profile(fast=False)
    est, parts = estimate_mb(m, p.variants["fp32"], 60.0, 4, 1, 1)
    body = parts["start_mb"] + parts["resident_mb"] + parts["activation_mb"] + parts["buffers_mb"]
    assert est == pytest.approx(body + parts["margin_mb"], abs=0.02)
    assert parts["activation_mb"] == 10.0 and parts["resident_mb"] == 40.0
    assert plan(None, p=p).floor_mb == pytest.approx(est, abs=0.1)


def test_the_load_transient_is_a_phase_of_its_own():
    """fast mode's load peaks at 70 MiB over the start: a budget that fits the loop but not the load refuses fast."""
    p = plan(60 + 45 + 12 + 10, n=1, m=manifest(image_size=16, grid=1))
    assert p.mode == "lean"
    p2 = plan(60 + 70 + 8, n=1, m=manifest(image_size=16, grid=1))
    assert p2.mode == "fast"


def test_fp32_whenever_it_fits_int8_only_when_nothing_else_does():
    m, p = manifest(int8=True), profile(int8=True)
    roomy = plan(400.0, m=m, p=p)
    assert roomy.variant == "fp32"
    tight = plan(95.0, m=m, p=p)
    assert tight.variant == "int8"
    assert plan(400.0, m=m, p=p, precision="int8").variant == "int8"
    with pytest.raises(EdgediffError, match="no int8 denoiser"):
        plan(400.0, precision="int8")
    with pytest.raises(EdgediffError, match="--precision"):
        plan(400.0, precision="fp16")


def test_activation_is_linear_beyond_the_measured_points_with_slack():
    vp = profile().variants["fp32"]
    assert activation_mb(vp, 2) == 18.0
    assert activation_mb(vp, 3) == pytest.approx(26.0)
    # slope: the steepest of the measured segments (8) and the mean per cell at 4 (8.5), plus 10% slack
    assert activation_mb(vp, 8) == pytest.approx(34.0 + 8.5 * 4 * 1.1)


def test_buffers_grow_with_images_per_pass_and_the_cap_covers_activations():
    m = manifest(image_size=256, grid=8)
    assert buffers_mb(m, 16, 16, 1) > buffers_mb(m, 16, 1, 1) + 30  # 15 more images × 3 float buffers ≈ 36 MiB
    p = plan(400.0, m=m, n=16)
    assert p.settings.arena == "capped" and p.settings.cap_mb >= p.breakdown["activation_mb"]
    committed = p.breakdown["start_mb"] + p.breakdown["resident_mb"]
    assert p.settings.cap_mb == pytest.approx(400.0 - committed, abs=0.2)
    assert plan(400.0, m=m, n=16, cap=False).settings.cap_mb is None


def test_pinned_choices_and_bad_flags():
    p = plan(1000.0, cells_per_call=2, images_per_pass=2)
    assert (p.cells_per_call, p.images_per_pass) == (2, 2)
    with pytest.raises(EdgediffError, match="--cells-per-call"):
        plan(1000.0, cells_per_call=0)
    with pytest.raises(EdgediffError, match="--images-per-pass"):
        plan(1000.0, images_per_pass=9)
    with pytest.raises(EdgediffError, match="--n"):
        plan(1000.0, n=0)


def test_a_large_bank_raises_the_floor_through_its_decode_phase():
    small = plan(None, m=manifest(lut_entries=100)).floor_mb
    big = plan(None, m=manifest(lut_entries=4_000_000)).floor_mb  # 4M × 16 floats = 244 MiB decoded
    assert big > small + 200


def test_no_speed_up_is_assumed_beyond_the_largest_measured_batch():
    from edgediff.runtime.estimates import ms_per_call

    vp = profile().variants["fp32"]  # 10, 16, 28 ms at 1, 2, 4 cells
    assert ms_per_call(vp, 3) == pytest.approx(22.0)  # interpolated
    assert ms_per_call(vp, 16) == pytest.approx(28.0 * 4)  # 4-cell time per cell, not the 2→4 slope (6 ms/cell)


def test_without_a_budget_memory_is_not_spent_for_less_than_ten_percent():
    """`auto`: the leanest plan within 10% of the fastest estimate; an explicit budget still buys the fastest."""
    v = {"fp32": VariantProfile(resident_mb=40.0, activation_mb={"1": 10.0, "2": 18.0, "4": 34.0},
                                ms_per_call={"1": 10.0, "2": 19.5, "4": 38.5})}  # batching saves 2.5% at most
    p = MemoryProfile(baseline_mb=50.0, variants=v, settings={})
    fastest = plan(10_000.0, p=p)
    auto = plan(10_000.0, p=p, auto=True)
    assert fastest.cells_per_call > 1
    assert auto.cells_per_call == 1 and auto.estimate_mb < fastest.estimate_mb
    worth_it = plan(10_000.0, auto=True)  # the default profile: 4 cells per call is 30% faster per cell than 1
    assert worth_it.cells_per_call > 1
