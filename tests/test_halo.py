"""Halo cells: each cell sees m pixels of its neighbours' current x_t (edgediff.cells), predicts its centre.

Checked here: the numpy crop and its torch twin agree (mask included); halo 0 is the original cell model to the
byte; the step is synchronous (cells never see a neighbour's x_{t-1}); a halo bundle exports, verifies, is profiled
at its real input shape and samples the same images as torch; older manifests (no halo key) still load; a halo
model warm-starts from a halo-0 bundle with the mask channel's weights at zero.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgediff.bundle import BundleError, parse_manifest, read_manifest
from edgediff.errors import EdgediffError
from edgediff.cells import (INPUT_NAMES, CellGeometry, example_feeds, halo_patches, input_specs, onehot, pool_global,
                            split)
from edgediff.models import ModelConfig, build_model
from edgediff.models.cells import halo_patches_torch
from edgediff.runtime.sampler import sample_bundle
from edgediff.sampling import sample_loop
from edgediff.schedule import Schedule, ddim_step, ddim_timesteps
from edgediff.torch_sampler import sample_torch

from runtime_support import untrained_bundle


def _images(n=3, size=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("halo", [0, 1, 4])
def test_halo_crop_matches_its_torch_twin_and_marks_the_image(halo):
    geom = CellGeometry(16, 3, 2, halo)
    x = _images()
    imgs, cells = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 3])
    got = halo_patches(x, imgs, cells, geom)
    assert got.shape == (4, 3 + (halo > 0), 8 + 2 * halo, 8 + 2 * halo)
    twin = halo_patches_torch(torch.from_numpy(x), torch.from_numpy(imgs), torch.from_numpy(cells), geom).numpy()
    np.testing.assert_array_equal(got, twin)
    centre = got[:, :3, halo : halo + 8, halo : halo + 8]
    np.testing.assert_array_equal(centre, split(x, 2)[imgs, cells])  # the cell itself, untouched
    if halo:
        # a corner cell sees (8 + halo)² real pixels; zero padding beyond the edge, marked 0 in the mask
        assert got[0, 3].sum() == (8 + halo) ** 2
        assert np.all(got[0, :3, :halo] == 0) and np.all(got[0, 3, :halo] == 0)
        # cell 0's right halo is cell 1's left columns, read from the same x_t
        np.testing.assert_array_equal(got[0, :3, halo : halo + 8, 8 + halo :], x[0, :, 0:8, 8 : 8 + halo])


def test_halo_models_predict_the_centre_only():
    for backbone in ("unet", "dis"):
        cfg = ModelConfig(image_size=16, grid=2, halo=2, dim=8, mults=(1, 2), depth=2, snippet_dim=8, backbone=backbone)
        feeds = example_feeds(cfg.geometry, 8, 3)
        out = build_model(cfg)(*[torch.from_numpy(feeds[k]) for k in INPUT_NAMES])
        assert out.shape == (3, 3, 8, 8)
    assert input_specs(CellGeometry(16, 3, 2, 2), 8)[0] == ("patch", "float32", ["batch", 4, 12, 12])
    with pytest.raises(ValueError, match="halo"):
        CellGeometry(16, 3, 2, 9)


def _reference_cell_loop(eps_fn, x, grid, steps, snippets):
    """The cell loop as it was before halos existed: split, denoise, write each cell of x_{t-1}."""
    acp = Schedule().alphas_cumprod()
    ts = ddim_timesteps(steps, 1000)
    n, c, h, _ = x.shape
    p = h // grid
    for k, t in enumerate(ts):
        t_prev = int(ts[k + 1]) if k + 1 < len(ts) else -1
        cells = split(x, grid).reshape(n * grid * grid, c, p, p)
        glob = np.repeat(pool_global(x, grid), grid * grid, axis=0)
        pos = np.tile(onehot(np.arange(grid * grid), grid), (n, 1))
        eps = eps_fn(cells, glob, np.full(len(cells), t), pos, np.repeat(snippets, grid * grid, axis=0))
        new = np.stack([ddim_step(cells[j], eps[j], int(t), t_prev, acp) for j in range(len(cells))])
        x = new.reshape(n, grid, grid, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, h, h)
    return x


def test_halo_zero_is_the_original_cell_model_to_the_byte(tmp_path):
    bundle, _, cfg = untrained_bundle(tmp_path / "b", profile_modes=())
    sess = ort.InferenceSession(str(bundle / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    eps_fn = lambda *a: sess.run(None, dict(zip(INPUT_NAMES, a)))[0]  # noqa: E731
    snippets = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    x_T = _images(2)
    new = sample_loop(eps_fn, geom=CellGeometry(16, 3, 2, 0), n=2, steps=4, seed=0, snippets=snippets,
                      cells_per_call=8, x_T=x_T)
    old = _reference_cell_loop(eps_fn, x_T.copy(), 2, 4, snippets)
    np.testing.assert_array_equal(new, old)


def test_the_step_is_synchronous_whatever_the_cells_per_call():
    """A cell must see its neighbours' x_t even after they were updated in the same step."""
    geom = CellGeometry(16, 3, 2, 3)
    w = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)

    def eps_fn(patch, glob, t, pos, snippet):  # depends on the halo: each channel's mean over the whole input
        means = patch[:, :3].mean(axis=(2, 3)) @ w
        return np.broadcast_to(means[:, :, None, None], (len(patch), 3, 8, 8)).copy()

    run = lambda k: sample_loop(eps_fn, geom=geom, n=2, steps=3, seed=0,  # noqa: E731
                                snippets=np.zeros((2, 4), np.float32), cells_per_call=k)
    np.testing.assert_array_equal(run(1), run(8))


@pytest.fixture(scope="module")
def halo_bundle(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("halo") / "b", halo=2)


def test_halo_bundle_records_and_checks_its_geometry(halo_bundle):
    bundle, _, _ = halo_bundle
    m = read_manifest(bundle)
    assert m.halo == 2 and m.inputs[0].shape == ["batch", 4, 12, 12] and m.outputs[0].shape == ["batch", 3, 8, 8]
    raw = json.loads((bundle / "manifest.json").read_text())
    with pytest.raises(BundleError, match="halo"):
        parse_manifest({**raw, "halo": 0})  # the inputs no longer match the geometry
    with pytest.raises(BundleError, match="halo"):
        parse_manifest({**raw, "halo": 9})
    # the profile was measured at the real input shape: a row of inputs is (4 + 3)·12² floats, not 2·3·8²
    assert m.memory_profile is not None and m.memory_profile.variants["fp32"].activation_mb


def test_a_manifest_without_a_halo_key_is_a_halo_zero_bundle(tmp_path):
    bundle, _, _ = untrained_bundle(tmp_path / "b", profile_modes=())
    raw = json.loads((bundle / "manifest.json").read_text())
    raw.pop("halo")
    assert parse_manifest(raw).halo == 0


def test_halo_bundle_samples_what_torch_samples(halo_bundle):
    bundle, model, cfg = halo_bundle
    from edgediff import snippets as snip
    from edgediff.bundle import resolve
    from edgediff.lut import decode

    res = sample_bundle(bundle, n=3, steps=4, seed=5, keep_float=True, cells_per_call=5)
    m = read_manifest(bundle)
    bank = decode(np.load(resolve(bundle, m.files["lut_codes"])), np.load(resolve(bundle, m.files["lut_codebooks"])))
    snippets = snip.choose(bank, 3, seed=5, snippet=None, interpolate_spec=None)
    want = sample_torch(model, cfg, n=3, steps=4, seed=5, snippets=snippets)
    assert np.max(np.abs(res.floats - want)) < 1e-3


def test_a_halo_model_warm_starts_from_a_halo_zero_bundle(tmp_path):
    from edgediff.warmstart import load_init_weights

    bundle, src_model, cfg0 = untrained_bundle(tmp_path / "b", profile_modes=())
    same = build_model(cfg0)
    load_init_weights(same, bundle, cfg0)
    for (name, a), b in zip(src_model.state_dict().items(), same.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # GroupNorm affines included (anonymous in the ONNX file)
    cfg2 = ModelConfig(**{**cfg0.to_dict(), "mults": tuple(cfg0.mults), "halo": 2})
    halo_model = build_model(cfg2)
    load_init_weights(halo_model, bundle, cfg2)
    w = halo_model.conv_in.weight.detach()
    assert w.shape[1] == 7 and torch.all(w[:, 3] == 0)
    torch.testing.assert_close(torch.cat([w[:, :3], w[:, 4:]], dim=1), src_model.conv_in.weight)
    wrong = build_model(ModelConfig(**{**cfg2.to_dict(), "mults": (1, 2), "dim": 16}))
    with pytest.raises(EdgediffError, match="do not match"):
        load_init_weights(wrong, bundle, cfg2)


def test_training_batches_cut_the_halo_from_the_whole_noisy_image():
    from edgediff.models.layers import alphas_cumprod_torch
    from edgediff.batches import TrainBatches
    from edgediff.train import TrainConfig

    data = torch.from_numpy(_images(4))
    acp = alphas_cumprod_torch()
    kw = dict(image_size=16, grid=2, batch_size=6, snippet_dropout=0.0)
    b0 = TrainBatches(TrainConfig(**kw), 0, 6, data, None, None, acp, 8).get_batch(3)
    b2 = TrainBatches(TrainConfig(**kw, halo=2), 0, 6, data, None, None, acp, 8).get_batch(3)
    (p0, g0, t0, pos0, _), target0 = b0.inputs, b0.target
    (p2, g2, t2, pos2, _), target2 = b2.inputs, b2.target
    assert p2.shape == (6, 4, 12, 12) and g2.shape == (6, 3, 12, 12)
    torch.testing.assert_close(p2[:, :3, 2:10, 2:10], p0)  # the same draw: the centre is the halo-0 cell
    torch.testing.assert_close(g2[:, :, 2:10, 2:10], g0)
    torch.testing.assert_close(target2, target0)  # the loss stays on the centre cell
    assert torch.equal(t2, t0) and torch.equal(pos2, pos0)
    with pytest.raises(EdgediffError, match="--halo"):
        TrainConfig(**kw, halo=9).validate()
    assert "--halo 2" in TrainConfig(**kw, halo=2).command() and "--halo" not in TrainConfig(**kw).command()


@pytest.mark.slow
def test_a_trained_halo_run_exports_with_int8_and_samples(tmp_path):
    """The whole export path (parity on real halo inputs, int8 calibration and its image-level measurement, LUT,
    manifest) on a halo run; every sampling loop inside export must feed halo inputs."""
    from conftest import train_tiny_run
    from edgediff_export import ExportOptions, export_run

    run = train_tiny_run(tmp_path, memory=True, halo=2)
    res = export_run(run, tmp_path / "bundle", ExportOptions(int8=True, profile=False, guidance=2.0))
    m = res.manifest
    assert m.halo == 2 and m.inputs[0].shape == ["batch", 4, 12, 12] and "denoiser_int8" in m.files
    assert m.quality.int8["psnr_vs_fp32_db"] > 0
    out = sample_bundle(tmp_path / "bundle", n=2, steps=3, seed=0, precision="int8")
    assert out.images.shape == (2, 16, 16, 3)
