"""DDIM's η (edgediff.schedule.ddim_sigma, sample_loop's eta): η = 0 is the deterministic sampler every bundle had;
η > 0 adds seeded noise at every step but the last, keeps the noise level each step must reach, gives the same
images whatever the plan, is recorded by export and used by sample, and bad values are one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.bundle import BundleError, read_manifest
from edgediff.cells import CellGeometry
from edgediff.runtime.sampler import BundleSampler, SampleRequest
from edgediff.sampling import check_eta, sample_loop
from edgediff.schedule import Schedule, ddim_sigma, ddim_step, ddim_timesteps
from reliability_support import make_bundle, one_line, run_cli, with_sampling

GEOM = CellGeometry(image_size=16, channels=3, grid=2, halo=2)
ACP = Schedule().alphas_cumprod()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("eta") / "b", seed=4)


def test_eta_one_is_the_ddpm_posterior_and_every_step_keeps_its_noise_level():
    """σ² at η = 1 is DDPM's posterior variance β̃ between the two timesteps; the deterministic part's noise and σ's
    together make exactly the 1 − ᾱ_{t_prev} a step must end at, for every η; the last step adds none."""
    ts = ddim_timesteps(25, 1000)
    for t, t_prev in zip(ts[:-1], ts[1:]):
        a_t, a_prev = ACP[t], ACP[t_prev]
        beta_tilde = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        assert ddim_sigma(int(t), int(t_prev), ACP, 1.0) ** 2 == pytest.approx(beta_tilde, rel=1e-6)
        assert ddim_sigma(int(t), int(t_prev), ACP, 0.0) == 0.0
    assert ddim_sigma(int(ts[-1]), -1, ACP, 1.0) == 0.0
    rng = np.random.default_rng(0)
    x0, eps = np.zeros((3, 64, 64), np.float32), rng.standard_normal((3, 64, 64)).astype(np.float32)
    t, t_prev = 700, 500
    x_t = np.sqrt(ACP[t]) * x0 + np.sqrt(1 - ACP[t]) * eps
    for eta in (0.0, 0.5, 1.0):
        sigma = ddim_sigma(t, t_prev, ACP, eta)
        part = ddim_step(x_t.astype(np.float32), eps, t, t_prev, ACP, sigma=sigma)  # its noise: a multiple of eps
        np.testing.assert_allclose((part / eps) ** 2 + sigma**2, 1 - ACP[t_prev], rtol=1e-4)


def _loop(eta, cells_per_call=3, n=3, seed=0):
    def smooth(patch, glob, t, pos, snippet):  # any fixed function of the inputs will do
        h, p = GEOM.halo, GEOM.patch
        return np.tanh(patch[:, :3, h:h + p, h:h + p] + glob[:, :, h:h + p, h:h + p]) * 0.5

    return sample_loop(smooth, geom=GEOM, n=n, steps=6, seed=seed, snippets=np.zeros((n, 4), np.float32),
                       cells_per_call=cells_per_call, eta=eta)


def test_eta_zero_is_the_deterministic_sampler_and_eta_above_it_draws_other_images_from_the_seed():
    plain = _loop(0.0)
    assert not np.array_equal(plain, _loop(1.0))
    np.testing.assert_array_equal(_loop(1.0), _loop(1.0))
    np.testing.assert_array_equal(_loop(1.0, cells_per_call=1), _loop(1.0, cells_per_call=12))
    assert not np.array_equal(_loop(1.0, seed=1), _loop(1.0))


def test_eta_redraws_start_images_handed_over_as_transposed_views():
    """A redraw gets its start images as HWC pictures converted to CHW views; the step noise is drawn into the
    loop's buffers, which must therefore be C-ordered whatever numpy makes of the view (at 128 px its arithmetic
    keeps the view's order: `sample emoji-128 --eta 1` once failed there)."""
    geom = CellGeometry(image_size=128, channels=3, grid=8, halo=0)
    start = np.random.default_rng(3).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    out = sample_loop(lambda patch, glob, t, pos, snippet: np.zeros((len(patch), 3, 16, 16), np.float32), geom=geom,
                      n=1, steps=4, seed=0, snippets=np.zeros((1, 4), np.float32), cells_per_call=64, eta=1.0,
                      init=start, strength=0.5)
    assert out.shape == (1, 3, 128, 128) and np.isfinite(out).all()


def test_the_step_noise_of_an_image_does_not_depend_on_the_pass_it_is_drawn_in(bundle):
    def draw(**kw):
        return BundleSampler(bundle, SampleRequest(n=3, steps=4, seed=1, eta=1.0, **kw)).run().images

    np.testing.assert_array_equal(draw(), draw(images_per_pass=1))


def test_a_bundle_records_eta_and_sample_uses_it_unless_told(bundle, tmp_path):
    def draw(path, **kw):
        return BundleSampler(path, SampleRequest(n=2, steps=4, seed=1, **kw)).run().images

    with_sampling(bundle, tmp_path / "e", {"eta": 1})
    assert read_manifest(tmp_path / "e").sampling["eta"] == 1.0
    np.testing.assert_array_equal(draw(tmp_path / "e"), draw(bundle, eta=1.0))
    np.testing.assert_array_equal(draw(tmp_path / "e", eta=0.0), draw(bundle))


@pytest.mark.parametrize("value", [1.5, -0.1, True, "1"])
def test_a_bad_recorded_eta_is_refused(bundle, tmp_path, value):
    with pytest.raises(BundleError, match="sampling.eta must be a number from 0 to 1") as e:
        read_manifest(with_sampling(bundle, tmp_path / "b", {"eta": value}))
    assert one_line(str(e.value))


def test_sample_eta_out_of_range_is_a_one_line_refusal(bundle, tmp_path, monkeypatch, capsys):
    for bad in (float("nan"), 2.0):
        with pytest.raises(ValueError, match="from 0 .deterministic DDIM. to 1"):
            check_eta(bad)
    code, out, err = run_cli(monkeypatch, capsys, "sample", str(bundle), "--n", "1", "--steps", "2",
                             "--eta", "2", "--out", str(tmp_path / "g.png"))
    assert code != 0 and "--eta 2.0 must be a number from 0" in err
    assert one_line(err.strip().removeprefix("error: ")) and not (tmp_path / "g.png").exists()
