"""Hostile manifest.json files: random mutations of a valid manifest always end in a one-line `BundleError` (or a
manifest that is still sound), never another exception, and never a file read outside the bundle.

Each example mutates a real bundle's manifest (1-3 edits: replace any value in the tree with a nasty one, delete a
key, add an unknown key, point a file at `..`, an absolute path or a symlink, with the size and sha256 of the file
it points at so that only the path check can stop it, blow sizes up or below zero, change the schema version),
then opens the bundle while every `open` is recorded. A manifest that is still accepted must describe, plan and
(in the sampling property) sample, or fail with an `EdgediffError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgediff.bundle import MAX_MANIFEST_BYTES, BundleError, Manifest, open_bundle, read_manifest
from edgediff.bundle_info import describe
from edgediff.errors import EdgediffError

from reliability_support import inside, load_manifest_dict, make_bundle, one_line, record_opens, write_manifest_dict

SECRET = b"outside the bundle: must never be read\n" * 8
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAMPLE_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A valid bundle, and beside it a secret file and a symlink into the bundle that points at the secret."""
    root = tmp_path_factory.mktemp("manifest_world")
    bundle = make_bundle(root / "bundle")
    (root / "outside").mkdir()
    secret = root / "outside" / "secret.bin"
    secret.write_bytes(SECRET)
    os.symlink(secret, bundle / "link_out.bin")
    os.symlink(root / "outside", bundle / "dir_out")
    return {"root": root, "bundle": bundle, "secret": secret, "base": load_manifest_dict(bundle)}


# ---------------------------------------------------------------------------------------------------------------
# strategies

HUGE_INTS = [2**31, 2**32 + 7, 2**63, 2**64 + 1, 10**30, 10**4000, -1, -(2**63), 0]
NASTY_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5, 1e-320]
NASTY_TEXT = ["", "batch", "..", "../x", "/etc/passwd", "\n", "a\nb", "\u2028", "\x00", "x" * 5000, "ü", "1",
              "cosine", "epsilon", "float32", "denoiser.onnx"]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HUGE_INTS), st.integers(-(2**40), 2**40),
    st.sampled_from(NASTY_FLOATS), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY_TEXT), st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=12,
)


def tree_paths(node, prefix=()) -> list[tuple]:
    """Every location in the JSON tree (dict keys and list indices), the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += tree_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += tree_paths(v, prefix + (i,))
    return out


def get_at(node, path):
    for k in path:
        node = node[k]
    return node


def set_at(root, path, value):
    if not path:
        return value
    get_at(root, path[:-1])[path[-1]] = value
    return root


def hostile_paths(world) -> list[str]:
    secret = world["secret"]
    return [
        "../outside/secret.bin", str(secret), "a/../../outside/secret.bin", "./../outside/secret.bin",
        "link_out.bin", "dir_out/secret.bin", "~/secret.bin", "C:\\secret.bin", "c:secret.bin", "",
        "denoiser.onnx\x00", "/dev/zero", "/proc/self/environ", "//outside/secret.bin", "denoiser.onnx/",
        "./denoiser.onnx", "missing.onnx", ".", "lut_codes.npy",
    ]


def mutate(data, world) -> tuple[object, list[str]]:
    """1-3 random edits of the base manifest; returns the new value and a readable log of the edits."""
    raw = copy.deepcopy(world["base"])
    log: list[str] = []
    secret_sha = hashlib.sha256(SECRET).hexdigest()
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "insert", "path", "size", "version"]))
        if op in ("delete", "insert") and not isinstance(raw, dict):
            op = "replace"
        if op == "replace":
            where = data.draw(st.sampled_from(tree_paths(raw)))
            raw = set_at(raw, where, data.draw(json_values))
        elif op == "delete":
            dicts = [p for p in tree_paths(raw) if isinstance(get_at(raw, p), dict) and get_at(raw, p)]
            if not dicts:
                continue
            where = data.draw(st.sampled_from(dicts))
            node = get_at(raw, where)
            key = data.draw(st.sampled_from(sorted(node)))
            del node[key]
            where = where + (key,)
        elif op == "insert":
            dicts = [p for p in tree_paths(raw) if isinstance(get_at(raw, p), dict)]
            where = data.draw(st.sampled_from(dicts)) + (data.draw(st.text(max_size=8)),)
            raw = set_at(raw, where, data.draw(json_values))
        elif op == "path":
            files = raw.get("files") if isinstance(raw, dict) else None
            if not isinstance(files, dict) or not files or not all(isinstance(v, dict) for v in files.values()):
                continue
            role = data.draw(st.sampled_from(sorted(files)))
            target = data.draw(st.sampled_from(hostile_paths(world)))
            files[role]["path"] = target
            if "secret" in target or "link_out" in target:  # only the path check can stop this one
                files[role]["sha256"], files[role]["bytes"] = secret_sha, len(SECRET)
            where = ("files", role, "path")
        elif op == "size":
            sized = [p for p in tree_paths(raw) if p and p[-1] in ("bytes", "entries", "dim", "subvectors",
                     "centroids", "image_size", "grid", "patch_size", "channels", "snippet_dim", "params",
                     "num_train_timesteps", "resident_mb", "baseline_mb")]
            if not sized:
                continue
            where = data.draw(st.sampled_from(sized))
            raw = set_at(raw, where, data.draw(st.sampled_from(HUGE_INTS + NASTY_FLOATS)))
        else:  # version
            where = ("schema_version",)
            if isinstance(raw, dict):
                raw["schema_version"] = data.draw(st.one_of(st.integers(-5, 10**6), st.sampled_from(
                    [None, "1", 1.0, True, 10**4000])))
        log.append(f"{op} {where!r}")
    return raw, log


# ---------------------------------------------------------------------------------------------------------------
# the properties


def check_opens(seen: list[str], bundle: Path) -> None:
    outside = [p for p in seen if not inside(p, bundle)]
    assert not outside, f"read outside the bundle: {outside}"


def exercise_accepted(manifest: Manifest, bundle: Path) -> None:
    """What the device does with a manifest it accepted: describe it, plan with it. Only EdgediffError may stop it."""
    from edgediff.runtime.planner import plan_sampling

    for entry in manifest.files.values():
        assert inside(str(bundle / entry.path), bundle)
    describe(manifest, bundle)
    if manifest.memory_profile is not None:
        try:
            plan_sampling(manifest, manifest.memory_profile, n=2, now_mb=50.0, budget_mb=None)
        except EdgediffError as e:
            assert one_line(str(e)), str(e)


@PROPERTY
@given(data=st.data())
def test_mutated_manifest_is_refused_in_one_line_or_still_sound(world, data):
    bundle = world["bundle"]
    raw, log = mutate(data, world)
    write_manifest_dict(bundle, raw)
    with record_opens() as seen:
        try:
            manifest = open_bundle(bundle)
        except BundleError as e:
            event("refused")
            assert one_line(str(e)), f"{log}: {str(e)!r}"
            manifest = None
    check_opens(seen, bundle)
    if manifest is not None:
        event("accepted")
        with record_opens() as seen:
            exercise_accepted(manifest, bundle)
        check_opens(seen, bundle)


@SAMPLE_PROPERTY
@given(data=st.data())
def test_mutated_manifest_samples_or_fails_in_one_line(world, data, tmp_path_factory):
    """The whole device path (plan, checksum, LUT, onnxruntime, PNG) on a mutated manifest."""
    import onnxruntime as ort

    from edgediff.images import write_images
    from edgediff.runtime.sampler import sample_bundle

    bundle = world["bundle"]
    raw, log = mutate(data, world)
    write_manifest_dict(bundle, raw)
    verified: list[str] = []
    real_session = ort.InferenceSession

    def guarded_session(path, *a, **k):
        assert inside(str(path), bundle), path
        verified.append(str(path))
        return real_session(path, *a, **k)

    out = tmp_path_factory.mktemp("samples") / "s.png"
    with record_opens() as seen, mock.patch.object(ort, "InferenceSession", guarded_session):
        try:
            result = sample_bundle(bundle, n=1, steps=2, seed=0)
            write_images(result.images, out, None)  # as `edgediff sample` does: the runtime writes nothing
        except EdgediffError as e:
            event("refused")
            assert one_line(str(e)), f"{log}: {str(e)!r}"
            assert not out.exists()
        else:
            event("sampled")
            assert result.images.shape[0] == 1 and out.is_file()
    allowed = {"/proc/self/status", "/proc/self/clear_refs", "/proc/meminfo", "/dev/null"}  # RSS, planner, ctypes
    stray = [p for p in seen if not inside(p, bundle) and p not in allowed and not p.startswith(str(out.parent))]
    assert not stray, f"{log}: read outside the bundle: {stray}"


# ---------------------------------------------------------------------------------------------------------------
# raw bytes: what json.loads itself can throw


RAW_CASES = {
    "empty": b"",
    "truncated": None,  # filled from the real manifest below
    "binary": bytes(range(256)) * 4,
    "bad_utf8": b'{"schema_version": 1, "backbone": "\xff\xfe"}',
    "utf16": '{"schema_version": 1}'.encode("utf-16"),
    "bom": b"\xef\xbb\xbf" + b'{"schema_version": 1}',
    "deep_arrays": b"[" * 200_000,
    "deep_objects": b'{"a":' * 100_000,
    "huge_int": b'{"schema_version": 1' + b"0" * 5000 + b"}",
    "huge_float": b'{"schema_version": 1e999999}',
    "nan_token": b'{"schema_version": NaN}',
    "top_level_list": b"[1, 2, 3]",
    "top_level_string": b'"manifest"',
    "null": b"null",
    "dup_keys": b'{"schema_version": 1, "schema_version": 2}',
    "lone_surrogate": b'{"schema_version": 1, "backbone": "\\ud800"}',
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_undecodable_manifest_is_one_line(world, tmp_path, case):
    bundle = tmp_path / "b"
    bundle.mkdir()
    body = RAW_CASES[case]
    if body is None:
        full = json.dumps(world["base"]).encode()
        body = full[: len(full) // 2]
    (bundle / "manifest.json").write_bytes(body)
    with pytest.raises(BundleError) as err:
        open_bundle(bundle)
    assert one_line(str(err.value))


def test_oversized_manifest_is_refused_before_reading(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    with open(bundle / "manifest.json", "wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)
    with record_opens() as seen, pytest.raises(BundleError, match="larger than"):
        read_manifest(bundle)
    assert not seen


def test_manifest_symlinked_outside_is_not_read(world, tmp_path):
    """manifest.json itself may not point outside the bundle (here at a valid manifest elsewhere)."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    os.symlink(world["bundle"] / "manifest.json", bundle / "manifest.json")
    write_manifest_dict(world["bundle"], world["base"])
    with record_opens() as seen, pytest.raises(BundleError):
        open_bundle(bundle)
    check_opens(seen, bundle)


def test_whole_bundle_behind_a_symlink_still_opens(world, tmp_path):
    """The other side of the symlink rules: a bundle folder reached through a link is fine."""
    write_manifest_dict(world["bundle"], world["base"])
    link = tmp_path / "linked_bundle"
    os.symlink(world["bundle"], link)
    assert open_bundle(link).image_size == world["base"]["image_size"]


@pytest.mark.parametrize("version", [0, 2, 99, -1])
def test_unknown_schema_version_says_what_to_do(world, tmp_path, version):
    raw = dict(world["base"], schema_version=version)
    bundle = tmp_path / "b"
    bundle.mkdir()
    write_manifest_dict(bundle, raw)
    with pytest.raises(BundleError, match="upgrade edgediff or re-export") as err:
        open_bundle(bundle)
    assert one_line(str(err.value)) and str(version) in str(err.value)


def test_info_cli_prints_one_line_for_a_hostile_manifest(world, tmp_path):
    """Through the real console entry point: one line on stderr, exit code 2, no traceback."""
    import subprocess
    import sys

    bundle = tmp_path / "b"
    bundle.mkdir()
    raw = copy.deepcopy(world["base"])
    raw["files"]["denoiser_fp32"]["path"] = "../../../../etc/passwd"
    write_manifest_dict(bundle, raw)
    proc = subprocess.run([sys.executable, "-m", "edgediff.cli", "info", str(bundle)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "leaves the bundle" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# regressions: edits that once escaped as another exception or a multi-line message (kept as fixed examples, so
# they are tried on every run whatever hypothesis draws)


def _shape_edit(idx, dims):
    def edit(raw):
        for i in idx:
            raw[i[0]][i[1]]["shape"] = list(dims)
    return edit


def _set(*path_value):
    *path, value = path_value

    def edit(raw):
        set_at(raw, tuple(path), value)
    return edit


def _channels_1(raw):  # consistent with itself, not with the ONNX file
    raw["channels"] = 1
    for t in raw["inputs"][:2] + raw["outputs"]:
        t["shape"][1] = 1


def _grid_4(raw):
    raw["grid"], raw["patch_size"] = 4, 4
    for t in raw["inputs"][:2] + raw["outputs"]:
        t["shape"][2:] = [4, 4]
    raw["inputs"][3]["shape"][1] = 16


LIES = {
    "newline_in_profile_key": _set("memory_profile", "variants", "fp32", "activation_mb", "x\n", 1.0),
    "record_separator_variant": _set("memory_profile", "variants", "\x1e", None),
    "non_integer_cells_key": _set("memory_profile", "variants", "fp32", "activation_mb", "abc", 1.0),
    "zero_cells_key": _set("memory_profile", "variants", "fp32", "ms_per_call", "0", 1.0),
    "unknown_schedule": _set("schedule", "kind", "linear"),
    "inputs_reversed": lambda raw: raw.__setitem__("inputs", raw["inputs"][::-1]),
    "inputs_missing": lambda raw: raw.__setitem__("inputs", raw["inputs"][:3]),
    "patch_shape_wrong": _shape_edit([("inputs", 0)], ["batch", 3, 16, 16]),
    "lut_dim_wrong": _set("lut", "dim", 16),
    "channels_lie": _channels_1,
    "grid_lie": _grid_4,
    "input_renamed": _set("inputs", 0, "name", "patchX"),
    "output_renamed": _set("outputs", 0, "name", "nope"),
    "duplicate_names": _set("inputs", 1, "name", "patch"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_known_hostile_edits_fail_in_one_line_before_sampling(world, tmp_path, lie):
    """Each fails as an EdgediffError before a single denoiser call (sample_bundle with n=1, steps=1)."""
    from edgediff.runtime.sampler import sample_bundle

    raw = copy.deepcopy(world["base"])
    LIES[lie](raw)
    bundle = tmp_path / "b"
    bundle.mkdir()
    for name in ("denoiser.onnx", "lut_codes.npy", "lut_codebooks.npy"):
        os.link(world["bundle"] / name, bundle / name)
    write_manifest_dict(bundle, raw)
    calls = []
    with mock.patch("edgediff.runtime.sampler.sample_loop", side_effect=lambda *a, **k: calls.append(1)):
        with pytest.raises(EdgediffError) as err:
            sample_bundle(bundle, n=1, steps=1, seed=0)
    assert one_line(str(err.value)), str(err.value)
    assert not calls
