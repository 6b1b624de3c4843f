"""Memory-bank guidance: eps = eps(∅) + w·(eps(s) − eps(∅)), the same numbers however the calls are cut, planned
at twice the rows, recorded in the manifest, refused where there is no bank."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgediff.bundle import BundleError, parse_manifest
from edgediff.errors import EdgediffError
from edgediff.cells import CellGeometry
from edgediff.sampling import guided, resolve_guidance, sample_loop

from runtime_support import untrained_bundle


def _affine_eps(calls: list[int]):
    """A denoiser whose output is affine in the snippet, and which records the rows of every call."""

    def eps(patch, glob, t, pos, snippet):
        calls.append(len(patch))
        return (0.1 * patch + snippet[:, :1, None, None] * 0.5 + 0.01 * t[:, None, None, None] / 1000).astype(
            np.float32)

    return eps


def test_guided_eps_is_the_extrapolation_and_one_or_two_calls_agree():
    rng = np.random.default_rng(0)
    k = 3
    args = (rng.standard_normal((k, 3, 4, 4), dtype=np.float32), rng.standard_normal((k, 3, 4, 4), dtype=np.float32),
            np.full(k, 500), np.eye(4, dtype=np.float32)[:k], rng.standard_normal((k, 8), dtype=np.float32))
    calls: list[int] = []
    base = _affine_eps(calls)
    one_call = guided(base, 3.0, rows_per_call=2 * k)(*args)
    two_calls = guided(base, 3.0, rows_per_call=k)(*args)
    assert calls == [2 * k, k, k]
    np.testing.assert_allclose(one_call, two_calls, atol=1e-6)
    cond, null = base(*args), base(*args[:4], np.zeros_like(args[4]))
    np.testing.assert_allclose(one_call, null + 3.0 * (cond - null), atol=1e-6)


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_the_loop_gives_the_same_images_for_any_rows_per_call(rows):
    snippets = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    kw = dict(geom=CellGeometry(8, 3, 2, 0), n=2, steps=4, seed=3, snippets=snippets)
    ref = sample_loop(_affine_eps([]), cells_per_call=8, guidance=2.5, **kw)
    calls: list[int] = []
    out = sample_loop(_affine_eps(calls), cells_per_call=rows, guidance=2.5, **kw)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert max(calls) <= max(rows, 1) and sum(calls) == 2 * 8 * 4  # every cell twice per step, never over the rows
    plain = sample_loop(_affine_eps([]), cells_per_call=rows, guidance=1.0, **kw)
    assert np.abs(plain - ref).max() > 1e-3


@pytest.mark.parametrize("bad", [-1.0, 21.0, float("nan"), float("inf")])
def test_bad_scales_and_guidance_without_a_bank_are_clear_errors(bad):
    with pytest.raises(EdgediffError, match="--guidance .* between 0 and 20"):
        resolve_guidance(bad, has_bank=True)
    with pytest.raises(EdgediffError, match="needs a memory bank"):
        resolve_guidance(2.0, has_bank=False)
    assert resolve_guidance(None, has_bank=False, default=3.0) == 1.0
    assert resolve_guidance(None, has_bank=True, default=3.0) == 3.0


def test_planner_counts_two_rows_per_guided_cell():
    from test_planner import plan

    plain, guided_plan = plan(None, cells_per_call=4), plan(None, cells_per_call=4, guidance=3.0)
    assert guided_plan.est_ms_per_step == pytest.approx(2 * plain.est_ms_per_step)
    assert "guidance 3" in guided_plan.describe() and "guidance" not in plain.describe()
    one = plan(None, cells_per_call=1, guidance=3.0)
    assert one.est_ms_per_step == pytest.approx(2 * plan(None, cells_per_call=1).est_ms_per_step)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("guided") / "b")


def test_bundle_default_and_flag(tiny, tmp_path):
    """manifest.sampling.guidance is what `edgediff sample` uses unless --guidance says otherwise; the device images
    equal the torch sampler's under guidance too."""
    import shutil

    from edgediff.bundle import read_manifest
    from edgediff.runtime.conditions import choose_snippets
    from edgediff.runtime.sampler import sample_bundle
    from edgediff.torch_sampler import sample_torch

    bundle, model, config = tiny
    kw = dict(n=2, steps=4, seed=1, cap=False, keep_float=True)
    plain = sample_bundle(bundle, **kw)
    g3 = sample_bundle(bundle, guidance=3.0, cells_per_call=2, **kw)
    assert plain.plan.guidance == 1.0 and g3.plan.guidance == 3.0
    assert np.abs(g3.floats - plain.floats).max() > 1e-3
    snippets = choose_snippets(bundle, read_manifest(bundle), 2, 1, None, None)
    ref = sample_torch(model, config, n=2, steps=4, seed=1, snippets=snippets, guidance=3.0)
    assert np.abs(g3.floats - ref).max() <= 1e-3

    recommended = tmp_path / "rec"
    shutil.copytree(bundle, recommended)
    raw = json.loads((recommended / "manifest.json").read_text())
    raw["sampling"] = {"guidance": 3.0}
    (recommended / "manifest.json").write_text(json.dumps(raw))
    by_default = sample_bundle(recommended, cells_per_call=2, **kw)
    assert by_default.plan.guidance == 3.0
    np.testing.assert_allclose(by_default.floats, g3.floats, atol=1e-5)
    assert sample_bundle(recommended, guidance=1.0, **kw).plan.guidance == 1.0


@pytest.mark.parametrize("value", ["3", -1, 100, True, None])
def test_manifest_sampling_is_validated(tiny, value):
    bundle, _, _ = tiny
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["sampling"] = {"guidance": value}
    with pytest.raises(BundleError, match="manifest.sampling.guidance"):
        parse_manifest(raw)
    raw["sampling"] = {"guidance": 2, "temperature": 1}
    with pytest.raises(BundleError, match="unknown key temperature"):
        parse_manifest(raw)
