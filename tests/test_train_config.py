"""Typed training settings: every TrainConfig field is reachable from an `edgediff train` flag (or listed as not
one, with the reason), the flags' defaults are the dataclass's, `model` takes only what ModelConfig can use, and the
records already on disk (checkpoint meta, the shipped manifest) still load to the same configs."""

from __future__ import annotations

import glob
import json
from dataclasses import MISSING, fields

import pytest

from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig
from edgediff.train_config import MODEL_OVERRIDES, TrainConfig

# TrainConfig fields with no flag of their own: fixed parts of the recipe, changed in code, recorded in run.json.
NOT_FLAGS = {"weight_decay": "AdamW's decay, 0 in every recipe", "grad_clip": "gradient-norm clip of the recipe",
             "warmup_steps": "fixed LR warm-up (a resumed run must keep the same schedule)"}
# fields set through flags of another name
FLAG_FOR = {"memory": ("no_memory",), "overrides": ("override",),
            "model": ("dim", "mults", "depth", "preset", "position_map", "schedule_shift")}
# flags that say how to run the command, not what the run is
COMMAND_ONLY = {"resume"}


def _train_flags() -> dict:
    import typer.main

    from edgediff.cli import app

    return {p.name: p for p in typer.main.get_command(app).commands["train"].params}


def test_every_train_config_field_is_reachable_from_a_flag():
    flags = _train_flags()
    names = {f.name for f in fields(TrainConfig)}
    unreached = sorted(n for n in names - set(NOT_FLAGS) if not set(FLAG_FOR.get(n, (n,))) <= set(flags))
    assert unreached == [], "TrainConfig fields no `train` flag sets: add a flag or list them in NOT_FLAGS"
    assert set(NOT_FLAGS) <= names and not set(NOT_FLAGS) & set(flags)  # the exclusions are real and still needed
    mapped = {flag for n in names for flag in FLAG_FOR.get(n, (n,))}
    assert sorted(set(flags) - mapped - COMMAND_ONLY) == []  # and no flag goes nowhere


def test_flag_defaults_are_the_dataclass_defaults():
    """A flag whose default is a value (not None: "the preset's") must default to the field's default, or the
    command line and a TrainConfig built in code would train different runs."""
    flags = _train_flags()
    checked = 0
    for f in fields(TrainConfig):
        p = flags.get(f.name)
        if p is None or p.default is None or f.default is MISSING:
            continue
        default = str(p.default) if f.name == "out" else p.default
        assert default == f.default, (f.name, p.default, f.default)
        checked += 1
    assert checked >= 15
    assert flags["no_memory"].default is (not TrainConfig.memory)


@pytest.mark.parametrize("model, message", [
    ({"dims": 8}, "'dims' is not one a run may set"), ({"grid": 4}, "'grid' is not one"),
    ({"dim": "8"}, "dim = '8' must be int"), ({"dim": True}, "must be int"),
    ({"mults": [1, "2"]}, "must be a list of integers"), ({"depth": 2.0}, "depth = 2.0 must be int"),
])
def test_model_settings_are_refused_unless_modelconfig_can_use_them(model, message):
    with pytest.raises(EdgediffError, match=message):
        TrainConfig(model=model).validate()


def test_model_overrides_reach_the_model_config():
    every = {"dim": 8, "mults": [1, 2], "num_res_blocks": 2, "snippet_dim": 8, "depth": 2, "token_patch": 4}
    cfg = TrainConfig(model=every)
    cfg.validate()
    got = cfg.model_config(snippet_dim=8)
    assert (got.dim, got.mults, got.num_res_blocks, got.depth, got.token_patch) == (8, (1, 2), 2, 2, 4)
    assert {"image_size", "grid", "halo", "backbone", "channels"}.isdisjoint(MODEL_OVERRIDES)


def test_old_records_load_through_from_dict():
    """A record with a key this version does not know still loads."""
    old = {**ModelConfig().to_dict(), "from_the_future": 1}
    assert ModelConfig.from_dict(old) == ModelConfig()
    assert TrainConfig.from_dict({"lr": 1e-3, "from_the_future": 1}) == TrainConfig(lr=1e-3)


def test_shipped_manifest_model_config_round_trips():
    from edgediff.bundle import DEFAULT_BUNDLE, read_manifest

    raw = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())["model_config"]
    config = read_manifest(DEFAULT_BUNDLE).model_config
    assert json.dumps(config.to_dict()) == json.dumps(raw)  # same keys, values and order


RUN_RECORDS = sorted(glob.glob("/root/edgediff-runs/*/checkpoints/ckpt-*.json"))[-2:]


@pytest.mark.skipif(not RUN_RECORDS, reason="no training runs on this machine")
@pytest.mark.parametrize("path", RUN_RECORDS)
def test_checkpoint_records_on_disk_still_load(path):
    """Read-only: a real run's checkpoint meta rebuilds the model it records, from its own record and from its
    recorded training settings alike."""
    try:  # the runs are live: a checkpoint may be rotated away between collection and now
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        pytest.skip(f"{path} was rotated away by its run")
    config = ModelConfig.from_dict(meta["model"])
    assert json.dumps(config.to_dict()) == json.dumps(meta["model"])
    train = TrainConfig.from_dict(meta["train"])
    train.validate()
    assert train.model_config(snippet_dim=config.snippet_dim) == config
