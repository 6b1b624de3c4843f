"""Shipped models by short name (edgediff.shipped): what `sample`, `info`, `eval` and `audit` accept besides a folder."""

from __future__ import annotations

import pytest

from edgediff.bundle import DEFAULT_BUNDLE, resolve_bundle
from edgediff.errors import EdgediffError
from edgediff.shipped import SHIPPED, expand, installed, listing, shipped_bundle


def test_a_shipped_name_resolves_to_its_bundle_and_the_default_comes_first():
    assert next(iter(SHIPPED)) == "emoji-32" and SHIPPED["emoji-32"] == DEFAULT_BUNDLE
    assert resolve_bundle("emoji-32") == DEFAULT_BUNDLE == resolve_bundle(None)
    assert "emoji-32 (the default)" in listing()


def test_a_folder_of_the_same_name_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emoji-32").mkdir()
    assert expand("emoji-32") == tmp_path.joinpath("emoji-32").relative_to(tmp_path)
    assert expand("not-a-model") is not None and str(expand("not-a-model")) == "not-a-model"


def test_a_shipped_name_this_install_lacks_is_one_line_naming_the_ones_it_has(monkeypatch, tmp_path):
    monkeypatch.setitem(SHIPPED, "emoji-999", tmp_path / "absent")
    with pytest.raises(EdgediffError) as err:
        shipped_bundle("emoji-999")
    msg = str(err.value)
    assert "\n" not in msg and "shipped: " in msg and all(name in msg for name in installed())


def test_emoji_128_ships_as_a_cascade_from_emoji_32_with_fp16_weights():
    """The 128 px model: installed, checksummed, recording emoji-32 as its base (it keeps a layout it is given but
    does not invent one: docs/scale.md) and its fp32 weights stored as fp16 (the package's 20 MB)."""
    from edgediff.bundle import open_bundle
    from edgediff.runtime.cascade import Stage, choose_start

    assert "emoji-128" in installed()
    m = open_bundle(shipped_bundle("emoji-128"))
    assert (m.image_size, m.grid, m.halo) == (128, 8, 4) and m.lut is not None
    assert m.sampling["base"]["model"] == "emoji-32" and 0 < m.sampling["base"]["strength"] < 1
    assert m.quality.fp16_weights["max_abs_vs_fp32"] < 0.05 and m.memory_profile is not None
    assert choose_start("emoji-128").stage == Stage("emoji-32", m.sampling["base"]["strength"])
    assert "emoji-128" in listing()


def test_emoji_128_samples_whole_128_px_images_through_its_cascade():
    """One image, 10 steps: both stages run, the images are 128 px, redrawn (not the upscaled base) and far closer
    to the base's layout than what emoji-128 draws alone from noise; a base swapped in (`base=`, as benchmarks.base_swap
    swaps candidates in) is the one used."""
    import numpy as np

    from edgediff.images import resize
    from edgediff.runtime.cascade import sample_as_recorded
    from edgediff.runtime.sampler import sample_bundle

    cascade = sample_as_recorded("emoji-128", n=1, steps=10, seed=0).images
    alone = sample_bundle("emoji-128", n=1, steps=10, seed=0).images
    base = resize(sample_bundle("emoji-32", n=1, steps=10, seed=0).images, 128)
    assert cascade.shape == (1, 128, 128, 3)
    dist = lambda a: np.abs(a.astype(int) - base.astype(int)).mean()  # noqa: E731
    assert 0.2 < dist(cascade) < 0.5 * dist(alone)
    assert np.array_equal(sample_as_recorded("emoji-128", n=1, steps=10, seed=0, base="none").images, alone)


def test_a_shipped_model_warm_starts_by_name_with_its_fp16_weights_read_as_float32():
    """`train --init-from emoji-128`: the name resolves to the shipped bundle, and the weights it stores as fp16
    behind a Cast (export --fp16-weights) come back under their torch names, every tensor of the model filled (51
    of 148 were missing before, so the shipped 128 px model could not be trained on)."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    from edgediff.bundle import read_manifest
    from edgediff.models import build_model
    from edgediff.warmstart import load_init_weights

    folder = shipped_bundle("emoji-128")
    config = read_manifest(folder).model_config
    model = build_model(config)
    assert load_init_weights(model, "emoji-128", config) == len(model.state_dict())
    stored = {t.name: t for t in onnx.load(str(folder / "denoiser.onnx")).graph.initializer}
    half = numpy_helper.to_array(stored["conv_in.weight__fp16"])
    assert half.dtype == np.float16
    torch.testing.assert_close(model.conv_in.weight.detach(), torch.from_numpy(half.astype(np.float32)))
