"""`eval` and `audit` score against the data the run or bundle records it was trained on (not the emoji set),
refuse a different --data unless told --other-data, and `audit` never silently replaces an earlier audit.
"""

from __future__ import annotations

import json
import os

import pytest

from edgediff.errors import EdgediffError

from conftest import tiny_model, write_images
from reliability_support import one_line


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run trained on a folder (given by a relative path, as a user types it) and its exported bundle."""
    from edgediff.train import TrainConfig, train
    from edgediff_export import ExportOptions, export_run

    root = tmp_path_factory.mktemp("data")
    data = write_images(root / "shapes", n=8, size=16)
    other = write_images(root / "other", n=12, size=16, seed=3)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train(TrainConfig(data="shapes", out=str(root / "run"), image_size=16, grid=2, steps=2, batch_size=4,
                          memory=False, sample_every=0, checkpoint_every=2, model=tiny_model(), device="cpu"),
              progress=False)
    finally:
        os.chdir(cwd)
    export_run(root / "run", root / "bundle", ExportOptions(profile=False))
    return {"root": root, "data": data, "other": other}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["bundle", "run"])
def test_eval_defaults_to_the_recorded_folder(world, target):
    from edgediff.evaluate import eval_command

    manifest = json.loads((world["root"] / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["data"] == str(world["data"])  # recorded absolute: found from any directory
    result = eval_command(world["root"] / target, n=4, steps=2)
    assert result["data"] == str(world["data"]) and result["n_real"] == 8


@pytest.mark.parametrize("target", ["bundle", "run"])
def test_eval_refuses_other_data_unless_asked(world, target):
    from edgediff.evaluate import eval_command

    with pytest.raises(EdgediffError) as err:
        eval_command(world["root"] / target, data=str(world["other"]), n=4, steps=2)
    assert one_line(str(err.value)) and "--other-data" in str(err.value) and str(world["data"]) in str(err.value)
    with pytest.raises(EdgediffError, match="--other-data"):
        eval_command(world["root"] / target, data="emoji", n=4, steps=2)


@pytest.mark.slow
def test_eval_other_data_when_asked(world):
    from edgediff.evaluate import eval_command

    result = eval_command(world["root"] / "bundle", data=str(world["other"]), other_data=True, n=4, steps=2)
    assert result["data"] == str(world["other"]) and result["n_real"] == 12


def test_audit_defaults_to_the_recorded_data_and_keeps_earlier_audits(world, tmp_path):
    from edgediff.audit import audit

    out = tmp_path / "audit"
    first = audit(world["root"] / "bundle", n=4, steps=2, features=False, out=out)
    assert first["data"] == str(world["data"]) and first["n_train"] == 8
    before = (out / "audit.json").read_bytes()
    with pytest.raises(EdgediffError) as err:
        audit(world["root"] / "bundle", n=4, steps=2, seed=1, features=False, out=out)
    assert one_line(str(err.value)) and "--overwrite" in str(err.value)
    assert (out / "audit.json").read_bytes() == before
    with pytest.raises(EdgediffError, match="--other-data"):
        audit(world["root"] / "run", data=str(world["other"]), n=4, steps=2, features=False, out=tmp_path / "b")
    again = audit(world["root"] / "bundle", n=4, steps=2, seed=1, features=False, out=out, overwrite=True)
    assert again["seed"] == 1 and (out / "audit.json").read_bytes() != before


def test_emoji_at_128_px_are_never_upsampled():
    """Issue 23: the font's bitmaps are ~136 px; a glyph smaller than the requested side is padded, not enlarged
    (165 of the 1,300 were upsampled at 128 px). The smallest glyph keeps its native extent at 128 px."""
    import numpy as np

    from edgediff.data import emoji_glyphs, find_emoji_font, render_emoji

    try:
        find_emoji_font()
    except EdgediffError:
        pytest.skip("the emoji font is not installed")
    extents = [max(x1 - x0, y1 - y0) for _, (x0, y0, x1, y1) in emoji_glyphs()]
    images = render_emoji(128)
    assert len(images) == len(extents)
    smallest = int(np.argmin(extents))
    ink = np.argwhere((images[smallest] < 250).any(axis=-1))
    drawn = int((ink.max(axis=0) - ink.min(axis=0)).max()) + 1
    assert extents[smallest] < 100 and drawn <= extents[smallest] + 2, (extents[smallest], drawn)
