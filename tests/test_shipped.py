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
