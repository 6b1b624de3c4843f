"""DiS / DiT backbones: the chunked scan equals the sequential recurrence, the model's tokens and skips are wired
right, the ONNX export equals torch in onnxruntime, and a DiS run trains, checkpoints and samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgediff.errors import EdgediffError
from edgediff.models import ModelConfig, build_model
from edgediff.cells import INPUT_NAMES, OUTPUT_NAMES
from edgediff.models.cells import example_inputs
from edgediff.models.ssm import BiSSMMixer, ScanBranch, ssd_chunked, ssd_sequential

from conftest import tiny_model


def _scan_inputs(length: int, heads: int = 3, headdim: int = 4, d_state: int = 5, seed: int = 0, dt_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, heads, headdim, generator=g)
    dt = F.softplus(torch.randn(2, length, heads, generator=g)) * dt_scale
    A = -torch.rand(heads, generator=g) * 15 - 1  # Mamba's A range [-16, -1]
    B = torch.randn(2, length, d_state, generator=g)
    C = torch.randn(2, length, d_state, generator=g)
    return x, dt, A, B, C


@pytest.mark.parametrize("length,chunk", [(1, 4), (7, 4), (16, 4), (33, 8), (64, 32), (131, 32), (40, 64)])
def test_chunked_scan_equals_sequential(length, chunk):
    args = _scan_inputs(length)
    diff = (ssd_chunked(*args, chunk=chunk) - ssd_sequential(*args)).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("dt_scale", [1e-3, 0.05, 5.0])
def test_chunked_scan_holds_for_slow_and_fast_decay(dt_scale):
    """Tiny Δ carries the state across many chunks; large Δ decays to ~0 inside one (the -inf mask path)."""
    args = _scan_inputs(100, dt_scale=dt_scale, seed=1)
    diff = (ssd_chunked(*args, chunk=16) - ssd_sequential(*args)).abs().max().item()
    assert diff <= 1e-4, diff


def test_scan_is_causal_and_mixer_is_bidirectional():
    torch.manual_seed(0)
    branch = ScanBranch(inner=16, heads=2, d_state=4, chunk=4).eval()
    x = torch.randn(1, 20, 16)
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        a, b = branch(x), branch(x2)
    assert torch.equal(a[:, :-1], b[:, :-1])  # one direction never sees the future
    assert not torch.allclose(a[:, -1], b[:, -1])

    mixer = BiSSMMixer(dim=8, d_state=4, headdim=8).eval()
    with torch.no_grad():
        for p in (mixer.fwd.dt_bias, mixer.bwd.dt_bias):
            p.fill_(-4.0)  # small Δ: slow decay, so the first token hears the last one clearly
        u = torch.randn(1, 20, 8)
        u2 = u.clone()
        u2[:, -1] += 1.0
        first_a, first_b = mixer(u)[:, 0], mixer(u2)[:, 0]
    assert (first_a - first_b).abs().max() > 1e-6  # the backward scan carries the last token to the first


def _cfg(backbone: str, **kw) -> ModelConfig:
    base = dict(image_size=16, grid=2, backbone=backbone, **tiny_model())
    base.update(kw)
    return ModelConfig.from_dict(base)


def _randomise_head(model) -> None:
    """The head starts at zero (predict no noise); give it weights so every input can show in the output."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.head.weight, std=0.5)


@pytest.mark.parametrize("backbone", ["dis", "dit"])
def test_every_input_reaches_the_output(backbone):
    cfg = _cfg(backbone)
    model = build_model(cfg).eval()
    _randomise_head(model)
    ex = example_inputs(cfg, batch=3)
    with torch.no_grad():
        base = model(*ex.values())
        assert base.shape == ex["patch"].shape
        assert torch.isfinite(base).all()
        for name in INPUT_NAMES:
            changed = dict(ex)
            if name == "timestep":
                changed[name] = (ex[name] + 317) % 1000
            elif name == "position":
                changed[name] = ex[name].roll(1, dims=1)
            else:
                changed[name] = ex[name] + 1.0
            out = model(*changed.values())
            assert (out - base).abs().max() > 1e-5, f"{backbone}: output ignores {name}"


def test_batch_items_do_not_mix():
    cfg = _cfg("dis")
    model = build_model(cfg).eval()
    _randomise_head(model)
    ex = example_inputs(cfg, batch=4)
    with torch.no_grad():
        full = model(*ex.values())
        one = model(*(v[1:2] for v in ex.values()))
    torch.testing.assert_close(full[1:2], one, atol=1e-5, rtol=1e-5)


def test_long_skips_and_block_count():
    model = build_model(_cfg("dis", depth=4))
    assert len(model.in_blocks) == 2 and len(model.out_blocks) == 2
    assert all(b.skip is not None and b.skip.in_features == 2 * b.skip.out_features for b in model.out_blocks)
    assert all(b.skip is None for b in model.in_blocks)
    assert model.pos_embed.shape[1] == 3 + 2 * (8 // 2) ** 2  # time, position, snippet + global + patch tokens


def test_bad_token_patch_is_a_clear_error():
    with pytest.raises(EdgediffError, match="token patch 3"):
        build_model(_cfg("dis", token_patch=3))


def test_gradients_reach_every_parameter():
    cfg = _cfg("dis")
    model = build_model(cfg)
    _randomise_head(model)
    ex = example_inputs(cfg, batch=2)
    model(*ex.values()).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("backbone", ["dis", "dit"])
def test_onnx_export_matches_torch_with_dynamic_batch(tmp_path, backbone):
    ort = pytest.importorskip("onnxruntime")
    cfg = _cfg(backbone, depth=2)
    model = build_model(cfg).eval()
    _randomise_head(model)
    ex = example_inputs(cfg, batch=2)
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / f"{backbone}.onnx"
    torch.onnx.export(
        model, tuple(ex.values()), str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
        dynamic_shapes={k: {0: batch} for k in INPUT_NAMES}, external_data=False,
    )
    assert not list(tmp_path.glob("*.data"))  # weights inside the one file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        feed = example_inputs(cfg, batch=n, seed=7)
        with torch.no_grad():
            want = model(*feed.values()).numpy()
        got = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4


@pytest.mark.slow
def test_dis_trains_checkpoints_and_samples(tmp_path, image_folder):
    from edgediff.checkpoint import load_ema_model
    from edgediff.torch_sampler import sample_torch
    from edgediff.train import TrainConfig, train

    cfg = TrainConfig(data=str(image_folder), out=str(tmp_path / "run"), image_size=16, grid=2, backbone="dis",
                      steps=60, batch_size=16, memory=False, sample_every=0, checkpoint_every=30, lr=2e-3,
                      model=tiny_model())
    result = train(cfg, progress=False)
    losses = np.array(result["losses"])
    assert np.isfinite(losses).all() and losses[-10:].mean() < losses[:5].mean()
    model, mcfg, meta = load_ema_model(tmp_path / "run")
    assert mcfg.backbone == "dis" and meta["step"] == 60
    imgs = sample_torch(model, mcfg, n=2, steps=3, seed=0)
    assert imgs.shape == (2, 3, 16, 16) and np.isfinite(imgs).all()


def test_mixer_constants_live_in_the_config_and_old_configs_rebuild():
    """A checkpoint written before the mixer constants were recorded rebuilds with the same shapes; the SSD chunk
    length changes how the scan is computed, never what it computes; the head width changes the architecture."""
    base = _cfg("dis")
    old = {k: v for k, v in base.to_dict().items() if not k.startswith(("ssm_", "attn_"))}
    rebuilt = build_model(ModelConfig.from_dict(old))
    model = build_model(base).eval()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}

    _randomise_head(model)
    rechunked = build_model(ModelConfig.from_dict({**base.to_dict(), "ssm_chunk": 3})).eval()
    rechunked.load_state_dict(model.state_dict())
    x = example_inputs(base, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(rechunked(**x), model(**x), atol=1e-5, rtol=1e-4)

    narrow = build_model(ModelConfig.from_dict({**base.to_dict(), "ssm_conv": 2}))
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in model.parameters())
