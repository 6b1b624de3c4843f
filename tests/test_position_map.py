"""The position map (ModelConfig.position_map): the one-hot position drawn as a channel on the global content.

What must hold: the map marks exactly the part of the global content that is the cell's own (else it teaches the
network a wrong layout), a model without the map warm-starts into one with it computing the same function, and the
flag reaches the model, the recorded command and the exported ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgediff.models import build_model
from edgediff.model_config import ModelConfig, model_choice
from edgediff.models.cells import example_inputs, position_map_torch
from edgediff.cells import pool_global


@pytest.mark.parametrize("image_size,grid", [(32, 2), (128, 8), (64, 8), (32, 8), (16, 8)])
def test_map_marks_the_cells_share_of_the_global_content(image_size, grid):
    """An image that is 1 on one cell and 0 elsewhere, pooled to cell size as the global content is, is non-zero
    exactly where that cell's map is; the map sums to 1 per global-content pixel the cell touches."""
    p = image_size // grid
    for cell in (0, grid + 1, grid * grid - 1):
        r, c = divmod(cell, grid)
        img = np.zeros((1, 1, image_size, image_size), np.float32)
        img[..., r * p:(r + 1) * p, c * p:(c + 1) * p] = 1.0
        pooled = pool_global(img, grid)[0, 0]
        onehot = torch.zeros(1, grid * grid)
        onehot[0, cell] = 1.0
        where = position_map_torch(onehot, grid, p, halo=0)[0, 0].numpy()
        assert where.shape == pooled.shape == (p, p)
        np.testing.assert_array_equal(where > 0, pooled > 0)
        np.testing.assert_allclose(where[where > 0], 1.0)


def test_map_is_zero_on_the_halo_padding():
    onehot = torch.eye(64)[:1]
    where = position_map_torch(onehot, 8, 16, halo=4)[0, 0]
    assert where.shape == (24, 24)
    assert where[:4].sum() == 0 and where[-4:].sum() == 0 and where[:, :4].sum() == 0 and where[:, -4:].sum() == 0
    assert where[4:6, 4:6].sum() == 4 and where.sum() == 4  # cell (0, 0) is the top-left 2 × 2 of 16 × 16


def test_warm_start_into_a_map_model_computes_the_same():
    """conv_in gains a zero column for the map: before training, the map model is the old model."""
    from edgediff.warmstart import FIRST_CONV, widen_first_conv

    base = dict(image_size=64, grid=4, halo=4, dim=16, mults=(1, 2), snippet_dim=8)
    old_cfg, new_cfg = ModelConfig(**base), ModelConfig(**base, position_map=True)
    torch.manual_seed(0)
    old, new = build_model(old_cfg).eval(), build_model(new_cfg).eval()
    for p in old.parameters():  # zero-initialised output convs would make any two models agree
        torch.nn.init.normal_(p, std=0.05)
    state = {k: v.numpy() for k, v in old.state_dict().items()}
    state[FIRST_CONV] = widen_first_conv(state[FIRST_CONV], new_cfg, new.state_dict()[FIRST_CONV].shape[1])
    new.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = example_inputs(old_cfg, batch=4)
    with torch.no_grad():
        a, b = old(**x), new(**x)
    assert a.abs().mean() > 1e-3
    torch.testing.assert_close(a, b)
    new.conv_in.weight.data[:, -1] += 1.0  # and the new channel is live: the output now depends on the map
    with torch.no_grad():
        assert (new(**x) - a).abs().max() > 1e-3


def test_flag_reaches_model_and_command():
    from edgediff.train import TrainConfig

    backbone, widths = model_choice("emoji-128", None, None, None, None, position_map=True)
    assert widths["position_map"] is True
    cfg = TrainConfig(data="emoji", image_size=128, grid=8, halo=4, backbone=backbone, model=widths)
    assert cfg.model_config().position_map and "--position-map" in cfg.command()
    _, off = model_choice("emoji-128", None, None, None, None)
    assert "position_map" not in off and "--position-map" not in TrainConfig(model=off).command()
    assert "position_map" not in ModelConfig().to_dict()  # old records stay byte for byte
    assert ModelConfig.from_dict(ModelConfig(position_map=True).to_dict()).position_map


def test_map_needs_aligned_cells():
    with pytest.raises(ValueError, match="divide"):
        build_model(ModelConfig(image_size=48, grid=3, halo=0, dim=16, mults=(1,), position_map=True))  # p=16, g=3
    with pytest.raises(ValueError, match="UNet"):
        build_model(ModelConfig(image_size=32, grid=2, backbone="dis", dim=32, depth=2, position_map=True))


def test_map_model_exports_with_parity(tmp_path):
    """The map is built from the `position` input inside the graph: the bundle interface is unchanged."""
    from edgediff_export.onnx_export import export_onnx, ort_outputs, torch_outputs

    cfg = ModelConfig(image_size=64, grid=8, halo=4, dim=16, mults=(1, 2), snippet_dim=8, position_map=True)
    model = build_model(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = export_onnx(model, cfg, tmp_path / "d.onnx")
    feeds = {k: v.numpy() for k, v in example_inputs(cfg, batch=8).items()}
    np.testing.assert_allclose(ort_outputs(path, feeds), torch_outputs(model, feeds), atol=1e-4)
