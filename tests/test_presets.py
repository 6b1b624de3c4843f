"""Named model sizes (edgediff.model_config.PRESETS) and how `train --preset` combines them with explicit flags."""

from __future__ import annotations

import pytest

from edgediff.model_config import geometry_choice, model_choice
from edgediff.errors import EdgediffError
from edgediff.model_config import PRESETS, ModelConfig


def test_unet_m_is_the_shipped_default_bundles_network():
    """The table's comment is a claim: building unet-m at the default bundle's geometry gives its parameter count."""
    from edgediff.bundle import read_manifest
    from edgediff.models import build_model, count_params
    from edgediff.bundle import DEFAULT_BUNDLE

    m = read_manifest(DEFAULT_BUNDLE)
    cfg = ModelConfig(image_size=m.image_size, grid=m.grid, halo=m.halo, snippet_dim=m.snippet_dim,
                      **PRESETS["unet-m"])
    assert count_params(build_model(cfg)) == m.params


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    from edgediff.models import build_model, count_params

    cfg = ModelConfig(**{"image_size": 32, "grid": 2, **PRESETS[name]})
    assert cfg.backbone == PRESETS[name]["backbone"] and count_params(build_model(cfg)) > 0


def test_explicit_flags_win_over_the_preset_and_defaults_fill_the_rest():
    assert model_choice(None, None, None, None, None) == (
        "unet", {"dim": ModelConfig.dim, "mults": list(ModelConfig.mults), "depth": ModelConfig.depth})
    assert model_choice("unet-m", None, None, None, None)[1]["dim"] == 40
    backbone, widths = model_choice("unet-m", None, 48, "1,2", None)
    assert backbone == "unet" and widths["dim"] == 48 and widths["mults"] == [1, 2]
    assert model_choice("dis-s", None, None, None, 3) == ("dis", {"dim": 64, "mults": [1, 2, 2], "depth": 3})
    assert model_choice("dis-s", "dit", None, None, None)[0] == "dit"


def test_an_unknown_preset_is_one_line_naming_the_known_ones():
    with pytest.raises(EdgediffError) as e:
        model_choice("unet-xxl", None, None, None, None)
    msg = str(e.value)
    assert "\n" not in msg and "--preset 'unet-xxl'" in msg and all(name in msg for name in PRESETS)


def test_a_recipe_preset_sets_the_geometry_and_the_halo_defaults_to_the_shipped_models():
    """Issue 24: --halo defaulted to 0 (visible seams) though every recipe uses 4; issue 23: emoji-128's geometry."""
    assert geometry_choice(None, None, None, None) == (32, 2, 4)
    assert geometry_choice(None, None, 1, None) == (32, 1, 0)  # a full-image model has no neighbours to see
    assert geometry_choice(None, 16, 4, None) == (16, 4, 4)  # capped at the 4 px cell side
    assert geometry_choice("emoji-128", None, None, None) == (128, 8, 4)
    assert geometry_choice("emoji-128", None, 4, 8) == (128, 4, 8)  # explicit flags win
    assert model_choice("emoji-128", None, None, None, None)[1]["dim"] == 40
