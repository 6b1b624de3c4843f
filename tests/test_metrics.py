"""FD-Lite0, KID and seam score: exact cases, and a check that the metric can tell real images from damaged ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgediff.errors import EdgediffError
from edgediff.metrics import fd_lite0, kid, seam_cell, seam_ratios


def test_fd_is_zero_for_identical_sets_and_mean_shift_squared_for_shifted():
    a = np.random.default_rng(0).standard_normal((300, 16))
    assert fd_lite0(a, a) < 1e-6
    shift = np.linspace(-1, 1, 16)
    # same covariance, means differ by `shift`: FD is exactly ‖shift‖²
    assert math.isclose(fd_lite0(a, a + shift), float(shift @ shift), rel_tol=1e-6)


def test_fd_grows_with_covariance_mismatch():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2000, 8))
    b = rng.standard_normal((2000, 8)) * 2.0
    # N(0, I) vs N(0, 4I): Tr(I + 4I - 2·2I) = d = 8
    assert 7.0 < fd_lite0(a, b) < 9.0
    with pytest.raises(EdgediffError, match="at least 2"):
        fd_lite0(a[:1], b)


def test_kid_near_zero_for_same_distribution_positive_for_different():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((400, 32)), rng.standard_normal((400, 32))
    same = kid(a, b, subsets=20, subset_size=200)
    diff = kid(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 0.02
    assert diff > 10 * max(abs(same), 1e-3)
    m, s = kid(a, b + 0.5, subsets=20, subset_size=200, return_std=True)
    assert m == diff and s >= 0


def test_seam_ratio_cases():
    ramp = np.tile(np.arange(16, dtype=np.float32)[None, :, None], (16, 1, 3))[None] * 10  # smooth: no seams
    # a horizontal ramp: every line's step equals its neighbours' → ratio exactly 1 at borders and mid-cell
    assert seam_ratios(ramp, 8) == {"border": 1.0, "midcell": 1.0}
    rng = np.random.default_rng(0)
    smooth = rng.integers(100, 110, (4, 16, 16, 3)).astype(np.uint8)
    blocky = smooth.copy()
    blocky[:, :8, :8] += 60  # one cell much brighter: a visible seam along its borders, none mid-cell
    assert seam_ratios(blocky, 8)["border"] > 3 * seam_ratios(smooth, 8)["border"]
    assert 0.7 < seam_ratios(blocky, 8)["midcell"] < 1.3
    assert 0.7 < seam_ratios(smooth, 8)["border"] < 1.3
    # symmetric content (a ring centred on the border line) is not a seam: the lines beside it step the same way
    yy, xx = np.mgrid[:16, :16] - 7.5
    ring = np.repeat((np.hypot(yy, xx) < 5)[None, :, :, None] * 200.0, 3, axis=3)
    assert seam_ratios(ring, 8)["border"] < 1.1
    assert seam_cell(32, 1) == 16 and seam_cell(32, 4) == 8
    with pytest.raises(EdgediffError, match="do not divide"):
        seam_ratios(smooth, 3)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["lite0", "independent"])
def test_fd_separates_held_out_real_from_blurred_and_noisy(encoder):
    """The metric can fail: two disjoint halves of real emoji must score far closer than real vs damaged, in the
    bank's Lite0 space and in the independent network's (which was fine-tuned away from ImageNet: it must still
    see blur and noise)."""
    from PIL import Image, ImageFilter

    from edgediff.data import load_dataset
    from edgediff.encoders import encode

    ds = load_dataset("emoji", 32)
    idx = np.random.default_rng(0).permutation(len(ds))
    n = 96
    a, b = ds.images[idx[:n]], ds.images[idx[n : 2 * n]]
    blurred = np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(2))) for x in b])
    noisy = np.clip(b.astype(np.float32) + np.random.default_rng(1).normal(0, 60, b.shape), 0, 255).astype(np.uint8)
    fa, fb, fblur, fnoise = (encode(x, encoder=encoder) for x in (a, b, blurred, noisy))
    fd = {k: fd_lite0(fa, f) for k, f in (("held_out", fb), ("blur", fblur), ("noise", fnoise))}
    kd = {k: kid(fa, f, subsets=20) for k, f in (("held_out", fb), ("blur", fblur), ("noise", fnoise))}
    print(encoder, "FD", fd, "KID", kd)
    # KID is unbiased: held-out real must be far closer than damaged images.
    assert kd["held_out"] < 0.25 * kd["blur"] and kd["held_out"] < 0.25 * kd["noise"], kd
    # FD carries a large positive bias at n = 96 in 1280-d (it is the same for every pair), which compresses the
    # ratios; the ordering must still hold with a clear margin.
    assert fd["held_out"] < 0.8 * fd["blur"] and fd["held_out"] < 0.8 * fd["noise"], fd


@pytest.mark.slow
def test_eval_prints_and_writes_both_metrics(tmp_path, monkeypatch, capsys):
    """`edgediff eval` reports FD/KID in Lite0 space and in the independent network's, and writes both to --json."""
    import json
    import sys

    from conftest import tiny_model, write_images
    from edgediff.cli import main
    from edgediff.train import TrainConfig, train

    folder = write_images(tmp_path / "img", n=8, size=16)
    train(TrainConfig(data=str(folder), image_size=16, grid=2, steps=2, batch_size=4, out=str(tmp_path / "run"),
                      memory=False, sample_every=0, device="cpu", model=tiny_model()), progress=False)
    out = tmp_path / "e.json"
    monkeypatch.setattr(sys, "argv", ["edgediff", "eval", str(tmp_path / "run"), "--data", str(folder), "--n", "6",
                                      "--steps", "2", "--json", str(out)])
    main()
    line = capsys.readouterr().out
    assert "FD-Lite0" in line and "FD-ResNet50-1by2" in line and "(independent)" in line
    r = json.loads(out.read_text())
    assert r["metric_independent"].startswith("resnet50-1by2")
    assert np.isfinite(r["fd_independent"]) and np.isfinite(r["kid_independent"])
    assert r["fd_independent"] != r["fd_lite0"]


def test_eval_and_audit_tell_runs_from_bundles_with_one_resolver(tmp_path):
    """One rule for both commands: a run has checkpoints/ (or run.json), a bundle has manifest.json; a path that
    is neither, or is missing, fails the same way in one line that says what to pass."""
    from reliability_support import one_line

    from edgediff.audit import audit
    from edgediff.evaluate import eval_command
    from edgediff.sources import BUNDLE, RUN, resolve_source

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert resolve_source(tmp_path / "run").kind == RUN and resolve_source(tmp_path / "bundle").kind == BUNDLE
    for path, match in ((tmp_path / "empty", "neither a run"), (tmp_path / "missing", "no such folder")):
        for command in (eval_command, audit):
            with pytest.raises(EdgediffError, match=match) as err:
                command(path, data="emoji")
            assert one_line(str(err.value)) and "RUN_DIR" in str(err.value) and "BUNDLE_DIR" in str(err.value)


def test_eval_scores_the_precision_asked_for_and_records_it(bundle, run_dir):
    """`eval --precision` scores a bundle's fp32 or int8 denoiser (what `sample --precision` would run) and the
    JSON says which ran; a run has only its torch model, so the flag is refused there in one line."""
    from reliability_support import one_line

    from edgediff.errors import EdgediffError
    from edgediff.evaluate import eval_command

    scores = {p: eval_command(bundle, n=4, steps=2, seed=0, precision=p) for p in ("fp32", "int8")}
    assert {p: r["precision"] for p, r in scores.items()} == {"fp32": "fp32", "int8": "int8"}  # the plan's variant
    with pytest.raises(EdgediffError) as e:
        eval_command(run_dir, n=4, steps=2, precision="int8")
    assert one_line(str(e.value)) and "--precision" in str(e.value) and "BUNDLE_DIR" in str(e.value)
