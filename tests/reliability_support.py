"""Shared pieces of the reliability tests: a small, genuine bundle built in milliseconds, and path recording.

The bundle is real in every way the device checks (an ONNX denoiser with the five inputs and the `eps` output,
a product-quantised lookup table, a manifest written by `edgediff.bundle.write_bundle`), but its denoiser is a
hand-built ONNX graph (a 1×1 conv of patch ‖ global content plus linear terms of the position, snippet and
timestep) instead of a trained UNet: exporting a trained model takes close to a minute on this machine, and what
these tests attack is the contract around the files, not the network inside them. The memory profile is a fixture
of plausible figures for a model this small (a few MiB), not a measurement.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import pathlib
import shutil
from pathlib import Path

import numpy as np

from edgediff.bundle import (SCHEMA_VERSION, LutSpec, Manifest, MemoryProfile, TensorSpec, VariantProfile,
                             file_entry, staging_dir, write_bundle)
from edgediff.lut import train_pq
from edgediff.model_config import ModelConfig
from edgediff.schedule import Schedule


def make_onnx(path: Path, *, channels: int, patch: int, cells: int, snippet_dim: int, seed: int = 0) -> Path:
    """A small denoiser graph with the exported model's interface (names, dtypes, dynamic batch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, p = channels, patch
    inits = [
        numpy_helper.from_array((rng.standard_normal((c, 2 * c, 1, 1)) * 0.3).astype(np.float32), "w_conv"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32) * 0.1, "b_conv"),
        numpy_helper.from_array(rng.standard_normal((cells, c)).astype(np.float32) * 0.1, "w_pos"),
        numpy_helper.from_array(rng.standard_normal((snippet_dim, c)).astype(np.float32) * 0.1, "w_snip"),
        numpy_helper.from_array(np.array([-1, c, 1, 1], dtype=np.int64), "shape_c11"),
        numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "shape_111"),
        numpy_helper.from_array(np.array(1e-4, dtype=np.float32), "t_scale"),
    ]
    nodes = [
        helper.make_node("Concat", ["patch", "global_content"], ["x"], axis=1),
        helper.make_node("Conv", ["x", "w_conv", "b_conv"], ["y"]),
        helper.make_node("MatMul", ["position", "w_pos"], ["cp"]),
        helper.make_node("MatMul", ["snippet", "w_snip"], ["cs"]),
        helper.make_node("Add", ["cp", "cs"], ["cond"]),
        helper.make_node("Reshape", ["cond", "shape_c11"], ["cond4"]),
        helper.make_node("Cast", ["timestep"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tf", "t_scale"], ["ts"]),
        helper.make_node("Reshape", ["ts", "shape_111"], ["ts4"]),
        helper.make_node("Add", ["y", "cond4"], ["y2"]),
        helper.make_node("Add", ["y2", "ts4"], ["eps"]),
    ]
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("patch", f, ["batch", c, p, p]),
        helper.make_tensor_value_info("global_content", f, ["batch", c, p, p]),
        helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("position", f, ["batch", cells]),
        helper.make_tensor_value_info("snippet", f, ["batch", snippet_dim]),
    ]
    outputs = [helper.make_tensor_value_info("eps", f, ["batch", c, p, p])]
    graph = helper.make_graph(nodes, "reliability_denoiser", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    path.write_bytes(buf.getvalue())


def fixture_profile() -> MemoryProfile:
    """Plausible figures for a denoiser this small; enough for the planner to pick a plan."""
    acts = {"1": 0.5, "2": 0.6, "4": 0.8}
    ms = {"1": 0.05, "2": 0.06, "4": 0.08}
    return MemoryProfile(baseline_mb=45.0, variants={"fp32": VariantProfile(3.0, dict(acts), dict(ms)),
                                                     "fp32@fast": VariantProfile(3.5, dict(acts), dict(ms))},
                         settings={"note": "test fixture, not a measurement"})


def make_bundle(out: Path, *, image_size: int = 16, grid: int = 2, channels: int = 3, snippet_dim: int = 8,
                entries: int = 300, lut: bool = True, seed: int = 0, profile: bool = True) -> Path:
    """Write a complete bundle at `out` through the real `write_bundle` (staging folder, manifest last, rename)."""
    patch = image_size // grid
    stage = staging_dir(out)
    make_onnx(stage / "denoiser.onnx", channels=channels, patch=patch, cells=grid * grid, snippet_dim=snippet_dim,
              seed=seed)
    files = {"denoiser_fp32": file_entry(stage, "denoiser.onnx")}
    lut_spec = None
    if lut:
        rng = np.random.default_rng(seed + 1)
        bank = rng.standard_normal((entries, snippet_dim)).astype(np.float32)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
        pq = train_pq(bank, 4, seed=seed, iters=5)
        _npy(stage / "lut_codes.npy", pq.encode(bank))
        _npy(stage / "lut_codebooks.npy", pq.codebooks.astype(np.float32))
        files["lut_codes"] = file_entry(stage, "lut_codes.npy")
        files["lut_codebooks"] = file_entry(stage, "lut_codebooks.npy")
        lut_spec = LutSpec(entries=entries, dim=snippet_dim, subvectors=4, centroids=pq.centroids)
    f32 = "float32"
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, image_size=image_size, channels=channels, grid=grid, patch_size=patch,
        snippet_dim=snippet_dim, backbone="unet", params=channels * 2 * channels + channels
        + grid * grid * channels + snippet_dim * channels,
        schedule=Schedule(), prediction="epsilon",
        inputs=[TensorSpec("patch", f32, ["batch", channels, patch, patch]),
                TensorSpec("global_content", f32, ["batch", channels, patch, patch]),
                TensorSpec("timestep", "int64", ["batch"]),
                TensorSpec("position", f32, ["batch", grid * grid]),
                TensorSpec("snippet", f32, ["batch", snippet_dim])],
        outputs=[TensorSpec("eps", f32, ["batch", channels, patch, patch])],
        files=files, lut=lut_spec, memory_profile=fixture_profile() if profile else None,
        model_config=ModelConfig(image_size=image_size, channels=channels, grid=grid, snippet_dim=snippet_dim, dim=8),
        training={"step": 0, "data": "synthetic"},
        created="2026-01-01T00:00:00+00:00", edgediff_version="test",
    )
    return write_bundle(out, manifest, stage)


def load_manifest_dict(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest_dict(bundle: Path, raw) -> None:
    """Overwrite manifest.json with any JSON value (NaN and Infinity allowed: a hostile writer may use them)."""
    (bundle / "manifest.json").write_text(json.dumps(raw, allow_nan=True))


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def with_sampling(src: Path, dst: Path, sampling: dict) -> Path:
    """A copy of bundle `src` at `dst` whose manifest.sampling is `sampling` (any JSON values, for refusals too)."""
    copy_bundle(src, dst)
    raw = load_manifest_dict(dst)
    raw["sampling"] = sampling
    write_manifest_dict(dst, raw)
    return dst


def one_line(message: str) -> bool:
    """What the CLI promises: a single, non-empty line (every Unicode line break counts)."""
    return bool(message.strip()) and len(message.splitlines()) == 1


@contextlib.contextmanager
def record_opens():
    """Record every path opened through Python during the block: builtins.open / io.open (numpy and pathlib go
    through it), os.open and pathlib.Path.open. Yields the list of absolute path strings."""
    seen: list[str] = []
    real_open, real_io_open, real_os_open, real_path_open = builtins.open, io.open, os.open, pathlib.Path.open

    def note(file) -> None:
        if isinstance(file, int):
            return  # an fd that something already opened
        seen.append(os.path.abspath(os.fsdecode(file)))

    def b_open(file, *a, **k):
        note(file)
        return real_open(file, *a, **k)

    def o_open(path, *a, **k):
        note(path)
        return real_os_open(path, *a, **k)

    def p_open(self, *a, **k):
        note(self)
        return real_path_open(self, *a, **k)

    builtins.open, io.open, os.open, pathlib.Path.open = b_open, b_open, o_open, p_open
    try:
        yield seen
    finally:
        builtins.open, io.open, os.open, pathlib.Path.open = real_open, real_io_open, real_os_open, real_path_open


def inside(path: str, root: Path) -> bool:
    """True when `path` (after resolving symlinks) is `root` or below it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point in this process; returns (exit code, stdout, stderr)."""
    import sys

    from edgediff.cli import main

    monkeypatch.setattr(sys, "argv", ["edgediff", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
