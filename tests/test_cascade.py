"""Redrawing start images (SDEdit) and the two-stage cascade: the loop enters the schedule where `strength` says and
noises the start image with the seeded noise; `sample --init` and `--base` work through the device runtime; a
bundle's recorded base is validated (a shipped name, never a path) and used by default; bad requests are one-line
refusals before any work."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.bundle import BundleError, read_manifest
from edgediff.cells import CellGeometry
from edgediff.errors import EdgediffError
from edgediff.images import save_png
from edgediff.runtime.cascade import CascadeSampler, Stage, choose_start
from edgediff.runtime.planner import BudgetError
from edgediff.runtime.sampler import BundleSampler, SampleRequest
from edgediff.sampling import sample_loop
from edgediff.schedule import Schedule, add_noise, ddim_timesteps, start_index
from reliability_support import load_manifest_dict, make_bundle, one_line, run_cli, write_manifest_dict


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    return make_bundle(root / "small", image_size=8, grid=2, seed=1), make_bundle(root / "large", seed=2)


def test_start_index_runs_the_strength_share_of_the_steps():
    assert [start_index(25, s) for s in (1.0, 0.6, 0.5, 0.01)] == [0, 10, 13, 24]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError):
            start_index(25, bad)


def test_the_loop_starts_from_the_noised_start_image_at_the_strengths_timestep():
    """Grid 1, no halo: the denoiser's first patch is the whole image, which must be add_noise(init, x_T, t0)."""
    geom = CellGeometry(image_size=8, channels=3, grid=1, halo=0)
    rng = np.random.default_rng(0)
    init, x_T = rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32), rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    seen = []

    def eps_fn(patch, glob, t, pos, snippet):
        seen.append((int(t[0]), patch.copy()))
        return np.zeros_like(patch)

    sample_loop(eps_fn, geom=geom, n=2, steps=10, seed=0, snippets=np.zeros((2, 4), np.float32), cells_per_call=2,
                x_T=x_T, init=init, strength=0.4)
    ts = ddim_timesteps(10)[start_index(10, 0.4):]
    assert [t for t, _ in seen] == list(ts) and len(ts) == 4
    expected = add_noise(init, x_T, np.full(2, ts[0]), Schedule().alphas_cumprod())
    np.testing.assert_allclose(seen[0][1], expected, atol=1e-6)


def test_a_low_strength_keeps_the_start_image_and_the_seed_fixes_the_result(bundles):
    _, large = bundles
    start = np.random.default_rng(3).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)

    def draw(strength, seed=0):
        return BundleSampler(large, SampleRequest(n=2, steps=10, seed=seed, strength=strength)).run(
            init=start if strength < 1 else None).images

    near, far = draw(0.2), draw(1.0)
    dist = lambda a: np.abs(a.astype(int) - start.astype(int)).mean()  # noqa: E731
    assert dist(near) < 0.5 * dist(far)
    np.testing.assert_array_equal(near, draw(0.2))
    assert not np.array_equal(near, draw(0.2, seed=1))


def test_strength_without_start_images_and_wrong_start_images_are_refused(bundles):
    _, large = bundles
    with pytest.raises(EdgediffError, match="--init"):
        BundleSampler(large, SampleRequest(n=2, steps=4, strength=0.5)).run()
    with pytest.raises(EdgediffError, match="start images must be"):
        BundleSampler(large, SampleRequest(n=2, steps=4, strength=0.5)).run(init=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(EdgediffError, match="--strength"):
        SampleRequest(strength=0.0).check()


def test_the_cascade_is_the_base_images_redrawn_and_plans_both_stages(bundles):
    small, large = bundles
    req = SampleRequest(n=3, steps=6, seed=4)
    cascade = CascadeSampler(large, req, Stage(small, 0.5))
    result = cascade.run()
    base = BundleSampler(small, req).run().images
    alone = BundleSampler(large, SampleRequest(n=3, steps=6, seed=4, strength=0.5)).run(init=base).images
    np.testing.assert_array_equal(result.images, alone)
    assert result.images.shape == (3, 16, 16, 3)


def test_a_budget_the_cascade_cannot_meet_names_the_larger_stages_floor(bundles):
    small, large = bundles
    floors = [BundleSampler(b, SampleRequest(n=2, steps=4)).plan().floor_mb for b in (small, large)]
    with pytest.raises(BudgetError) as e:
        CascadeSampler(large, SampleRequest(n=2, steps=4, memory_budget=1024 * 1024), Stage(small, 0.5)).plan()
    assert one_line(str(e.value)) and "this cascade" in str(e.value)
    assert e.value.floor_mb >= max(floors) and f"--memory-budget {e.value.floor_mb:.0f}MiB or more" in str(e.value)


def test_a_cascade_refused_by_its_second_stage_prints_nothing_first(bundles, tmp_path):
    """The base's plan fits a budget the second stage does not (its denoiser made heavier in the profile):
    the refusal names the second stage's need and comes before any plan line."""
    import shutil

    from edgediff.runtime import rss

    small, large = bundles
    base_floor = BundleSampler(small, SampleRequest(n=2, steps=4)).plan().floor_mb
    # a plan's estimate is never below this process's peak so far (other tests may have raised it far above the
    # tiny bundles' needs), so the heavy stage is made heavier than that peak too
    heavy = shutil.copytree(large, tmp_path / "heavy")
    raw = load_manifest_dict(heavy)
    for variant in raw["memory_profile"]["variants"].values():
        variant["resident_mb"] += 20.0 + rss.peak_mb()
    write_manifest_dict(heavy, raw)
    lines = []
    with pytest.raises(BudgetError) as e:
        CascadeSampler(heavy, SampleRequest(n=2, steps=4, memory_budget=int((base_floor + 5) * 1024 * 1024)),
                       Stage(small, 0.5), log=lines.append).plan()
    assert lines == [] and e.value.floor_mb > base_floor + 15


def test_a_recorded_base_is_used_by_default_and_strength_overrides_it(bundles, tmp_path):
    _, large = bundles
    raw = load_manifest_dict(large)
    raw["sampling"] = {"base": {"model": "emoji-32", "strength": 0.6}}
    import shutil

    shutil.copytree(large, tmp_path / "b")
    write_manifest_dict(tmp_path / "b", raw)
    assert choose_start(tmp_path / "b") .stage == Stage("emoji-32", 0.6)
    assert choose_start(tmp_path / "b", strength=0.4).stage == Stage("emoji-32", 0.4)
    assert choose_start(tmp_path / "b", base="none").stage is None
    assert choose_start(large).stage is None


@pytest.mark.parametrize("base, why", [({"model": "../other", "strength": 0.5}, "not a shipped model name"),
                                       ({"model": "emoji-32", "strength": 1.5}, "strength"),
                                       ({"model": "emoji-32"}, "exactly")])
def test_a_bad_recorded_base_is_refused(bundles, tmp_path, base, why):
    import shutil

    shutil.copytree(bundles[1], tmp_path / "b")
    raw = load_manifest_dict(tmp_path / "b")
    raw["sampling"] = {"base": base}
    write_manifest_dict(tmp_path / "b", raw)
    with pytest.raises(BundleError, match=why) as e:
        read_manifest(tmp_path / "b")
    assert one_line(str(e.value))


def test_sample_init_redraws_a_picture_from_the_command_line(bundles, tmp_path, monkeypatch, capsys):
    _, large = bundles
    picture = save_png(np.full((40, 30, 3), 200, np.uint8), tmp_path / "pic.png")
    code, out, err = run_cli(monkeypatch, capsys, "sample", str(large), "--n", "2", "--steps", "5", "--init",
                             str(picture), "--strength", "0.4", "--out", str(tmp_path / "g.png"))
    assert code == 0, err
    assert "2 DDIM steps from start images at strength 0.4" in out and (tmp_path / "g.png").is_file()


@pytest.mark.parametrize("args, why", [
    (["--init", "PIC"], "--init needs --strength"),
    (["--init", "missing.png", "--strength", "0.5"], "no such file"),
    (["--init", "PIC", "--base", "emoji-32", "--strength", "0.5"], "pass one of them"),
    (["--strength", "0.5"], "pass --init"),
    (["--strength", "0"], "above 0"),
    (["--base", "emoji-32"], "needs --strength"),
])
def test_bad_start_requests_are_one_line_refusals(bundles, tmp_path, monkeypatch, capsys, args, why):
    _, large = bundles
    picture = str(save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "pic.png"))
    args = [picture if a == "PIC" else str(tmp_path / a) if a == "missing.png" else a for a in args]
    code, out, err = run_cli(monkeypatch, capsys, "sample", str(large), "--n", "1", "--steps", "2", *args,
                             "--out", str(tmp_path / "g.png"))
    assert code != 0 and why in err and one_line(err.strip().removeprefix("error: "))
    assert not (tmp_path / "g.png").exists()
