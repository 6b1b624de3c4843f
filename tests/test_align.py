"""GMem-faithful conditioning (--snippet-mode gmem) and representation alignment (--align)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_model
from edgediff.errors import EdgediffError
from edgediff.batches import TrainBatches
from edgediff.train import TrainConfig, train


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(tmp_path / "run"), image_size=16, grid=2, steps=6, batch_size=8,
                memory=False, sample_every=0, checkpoint_every=3, lr=2e-3, warmup_steps=5, model=tiny_model())
    base.update(kw)
    return TrainConfig(**base)


def test_cell_regions_pick_each_cells_own_quadrant():
    from edgediff.align import cell_regions

    maps = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    out = cell_regions(maps, torch.tensor([1, 2]), grid=2)  # cell 1 = top right, cell 2 = bottom left
    assert out.shape == (2, 1, 4, 4)
    assert torch.equal(out[0, 0], maps[0, 0, :4, 4:]) and torch.equal(out[1, 0], maps[1, 0, 4:, :4])


def test_unet_returns_the_feature_map_it_is_aligned_on():
    """REPA reads `forward(..., return_features=True)`: the same noise estimate, plus the output of the first block
    after one downsampling (what a hook on down[feature_block] sees), with the channels the projector is built for."""
    from edgediff.models import ModelConfig, build_model
    from edgediff.models.cells import example_inputs

    cfg = ModelConfig(image_size=16, grid=2, halo=2, dim=8, mults=(1, 2), snippet_dim=8)
    model = build_model(cfg)
    torch.nn.init.normal_(model.conv_out.weight)  # a non-zero output, so "the same estimate" says something
    ex = list(example_inputs(cfg, batch=3).values())
    seen = []
    hook = model.down[model.feature_block].register_forward_hook(lambda _m, _i, out: seen.append(out))
    eps = model(*ex)
    eps2, feature = model(*ex, return_features=True)
    hook.remove()
    assert eps.abs().sum() > 0
    torch.testing.assert_close(eps2, eps, rtol=0, atol=0)
    assert torch.equal(feature, seen[1])
    assert feature.shape == (3, model.feature_channels, 6, 6)  # input side 12 (8 + 2·2), halved once


def test_gmem_batches_drop_elements_and_pca_batches_are_unchanged():
    from edgediff.models.layers import alphas_cumprod_torch

    data = torch.randn(4, 3, 8, 8)
    own, flipped = torch.ones(4, 200), torch.ones(4, 200)
    acp = alphas_cumprod_torch()
    pca = TrainConfig(image_size=8, grid=2, batch_size=64, snippet_dropout=0.0)
    gmem = TrainConfig(image_size=8, grid=2, batch_size=64, snippet_dropout=0.0, snippet_mode="gmem",
                       snippet_element_dropout=0.4)
    b1 = TrainBatches(pca, 0, 64, data, own, flipped, acp, 200).get_batch(3)
    b2 = TrainBatches(gmem, 0, 64, data, own, flipped, acp, 200).get_batch(3)
    (p1, *_, s1), t1 = b1.inputs, b1.target
    (p2, *_, s2), t2 = b2.inputs, b2.target
    assert torch.equal(p1, p2) and torch.equal(t1, t2)  # the extra draw comes last: everything else is the same
    assert torch.all(s1 == 1)
    values = s2.unique().double().numpy()
    np.testing.assert_allclose(values, [0.0, 1 / 0.6], rtol=1e-6)  # nn.Dropout: kept elements scaled by 1/(1-p)
    assert 0.35 < (s2 == 0).float().mean().item() < 0.45


def test_gmem_bank_is_full_dim_normalised_and_fixes_snippet_dim(tmp_path, monkeypatch):
    from edgediff.memory_bank import bank_for_training

    monkeypatch.setenv("EDGEDIFF_CACHE", str(tmp_path / "cache"))
    from edgediff.data import write_square_images, load_dataset

    folder = write_square_images(tmp_path / "img", n=6, size=16)
    feats = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    cfg = _cfg(tmp_path, folder, memory=True, snippet_mode="gmem", features=str(tmp_path / "f.npy"),
               model={**tiny_model(), "snippet_dim": 8})
    bank = bank_for_training(load_dataset(str(folder), 16), cfg)
    assert bank.own.shape == (6, 40) and bank.dim == 40  # no PCA: the whole feature
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    np.testing.assert_allclose(bank.own, unit * np.sqrt(40), rtol=1e-5, atol=1e-5)
    assert cfg.model_config(bank.dim).snippet_dim == 40  # the model override cannot shrink a gmem snippet
    r = train(cfg, progress=False)
    assert r["steps"] == 6


@pytest.mark.slow
def test_align_trains_resumes_exactly_and_stays_out_of_the_model(tmp_path, image_folder):
    from edgediff.checkpoint import latest_checkpoint, load_ema_model, load_tensors, split_prefix

    kw = dict(align=0.5, align_until=5)
    full = train(_cfg(tmp_path / "a", image_folder, **kw), progress=False)
    train(_cfg(tmp_path / "b", image_folder, steps=3, **kw), progress=False)
    resumed = train(_cfg(tmp_path / "b", image_folder, **kw), resume=True, progress=False)
    np.testing.assert_allclose(resumed["losses"], full["losses"], rtol=1e-6)
    plain = train(_cfg(tmp_path / "c", image_folder), progress=False)
    assert not np.allclose(plain["losses"][1:], full["losses"][1:])  # the alignment loss did change training
    ta = load_tensors(latest_checkpoint(tmp_path / "a" / "run")[0])
    tb = load_tensors(latest_checkpoint(tmp_path / "b" / "run")[0])
    pa, pb = split_prefix(ta, "align"), split_prefix(tb, "align")
    assert pa and all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)
    model, _, _ = load_ema_model(tmp_path / "a" / "run")  # export builds from this: no projector in it
    assert not any(k.startswith("align") for k in model.state_dict())


def test_align_projector_stops_learning_after_align_until(tmp_path, image_folder):
    from edgediff.checkpoint import latest_checkpoint, load_tensors, split_prefix

    train(_cfg(tmp_path, image_folder, steps=3, align=0.5, align_until=3), progress=False)
    before = split_prefix(load_tensors(latest_checkpoint(tmp_path / "run")[0]), "align")
    train(_cfg(tmp_path, image_folder, steps=6, align=0.5, align_until=3), resume=True, progress=False)
    after = split_prefix(load_tensors(latest_checkpoint(tmp_path / "run")[0]), "align")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_align_refuses_other_backbones_and_grids(tmp_path, image_folder):
    with pytest.raises(EdgediffError, match="unet"):
        train(_cfg(tmp_path / "a", image_folder, align=0.5, backbone="dis"), progress=False)
    with pytest.raises(EdgediffError, match="divides 8"):
        train(_cfg(tmp_path / "b", image_folder, align=0.5, grid=16, image_size=16 * 16 // 16,
                   model={**tiny_model(), "mults": [1]}), progress=False)
