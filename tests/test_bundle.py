"""Bundle validation: what the device refuses, with one line, before any model file is parsed.

The bundles here are hand-made (bytes that are not even ONNX), so a refusal can only come from the manifest and
checksum checks, never from a model loader; a bundle with garbage model bytes but a correct manifest passes them,
which shows the checks run without parsing the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgediff.bundle import (SCHEMA_VERSION, BundleError, FileEntry, LutSpec, Manifest, TensorSpec, file_entry,
                             open_bundle, parse_manifest, read_manifest, staging_dir, write_bundle)
from edgediff.bundle_info import bundle_info
from edgediff.schedule import Schedule


def _manifest(root: Path, with_lut: bool = True) -> Manifest:
    files = {"denoiser_fp32": file_entry(root, "denoiser.onnx")}
    lut = None
    if with_lut:
        files["lut_codes"] = file_entry(root, "lut_codes.npy")
        files["lut_codebooks"] = file_entry(root, "lut_codebooks.npy")
        lut = LutSpec(entries=5, dim=8, subvectors=4, centroids=5)
    cell = ["batch", 3, 8, 8]
    spec = [TensorSpec("patch", "float32", cell), TensorSpec("global_content", "float32", cell),
            TensorSpec("timestep", "int64", ["batch"]), TensorSpec("position", "float32", ["batch", 4]),
            TensorSpec("snippet", "float32", ["batch", 8])]
    return Manifest(schema_version=SCHEMA_VERSION, image_size=16, channels=3, grid=2, patch_size=8, snippet_dim=8,
                    backbone="unet", params=123, schedule=Schedule(),
                    prediction="epsilon", inputs=spec, outputs=[TensorSpec("eps", "float32", ["batch", 3, 8, 8])],
                    files=files, lut=lut, memory_profile=None)


def make_bundle(tmp_path: Path, with_lut: bool = True) -> Path:
    out = tmp_path / "bundle"
    stage = staging_dir(out)
    (stage / "denoiser.onnx").write_bytes(b"not an onnx model at all")
    np.save(stage / "lut_codes.npy", np.arange(20, dtype=np.uint8).reshape(5, 4) % 5)
    np.save(stage / "lut_codebooks.npy", np.zeros((4, 5, 2), np.float32))
    write_bundle(out, _manifest(stage, with_lut), stage)
    return out


def _edit(bundle: Path, fn) -> None:
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_a_good_bundle_opens_without_parsing_its_model(tmp_path):
    b = make_bundle(tmp_path)
    m = open_bundle(b)
    assert m.lut.bytes_per_entry == 4 and set(m.files) == {"denoiser_fp32", "lut_codes", "lut_codebooks"}
    assert not any(p.name.startswith(".bundle.staging") for p in tmp_path.iterdir())


def test_unknown_schema_version_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    _edit(b, lambda r: r.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert "schema version" in _one_line(e) and "upgrade edgediff" in str(e.value)


def test_missing_file_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    (b / "lut_codes.npy").unlink()
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert "lut_codes.npy" in _one_line(e) and "missing" in str(e.value)


def test_wrong_checksum_same_size_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    data = bytearray((b / "denoiser.onnx").read_bytes())
    data[0] ^= 1
    (b / "denoiser.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert "sha256" in _one_line(e)


def test_truncated_file_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    (b / "denoiser.onnx").write_bytes(b"short")
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert "bytes" in _one_line(e)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx", "C:\\x.onnx", "~/x.onnx"])
def test_paths_that_leave_the_bundle_are_refused(tmp_path, path):
    b = make_bundle(tmp_path)
    _edit(b, lambda r: r["files"]["denoiser_fp32"].update(path=path))
    with pytest.raises(BundleError) as e:
        read_manifest(b)
    _one_line(e)


def test_symlink_out_of_the_bundle_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    secret = tmp_path / "secret.onnx"
    secret.write_bytes((b / "denoiser.onnx").read_bytes())
    (b / "denoiser.onnx").unlink()
    os.symlink(secret, b / "denoiser.onnx")
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert "outside the bundle" in _one_line(e)


def test_lut_without_its_files_and_bad_json_are_refused(tmp_path):
    b = make_bundle(tmp_path)
    _edit(b, lambda r: r["files"].pop("lut_codes"))
    with pytest.raises(BundleError, match="lut_codes"):
        read_manifest(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not an edgediff bundle"):
        read_manifest(b)


def test_a_manifest_without_any_denoiser_is_refused_by_name(tmp_path):
    b = make_bundle(tmp_path)
    _edit(b, lambda r: r["files"].pop("denoiser_fp32"))
    with pytest.raises(BundleError, match=r"lacks a denoiser \(denoiser_fp32 or denoiser_int8\)"):
        read_manifest(b)


def test_write_bundle_refuses_a_staged_file_that_differs_from_its_entry(tmp_path):
    out = tmp_path / "bundle"
    stage = staging_dir(out)
    (stage / "denoiser.onnx").write_bytes(b"abc")
    m = _manifest(stage, with_lut=False)
    m.files["denoiser_fp32"] = FileEntry(path="denoiser.onnx", sha256="0" * 64, bytes=3)
    with pytest.raises(BundleError, match="does not match"):
        write_bundle(out, m, stage)
    assert not out.exists()


def test_info_prints_the_manifest_and_cli_refuses_a_bad_bundle_in_one_line(tmp_path):
    b = make_bundle(tmp_path)
    text = bundle_info(b)
    assert "grid 2×2" in text and "5 entries × 4 B" in text and "sha256" in text
    _edit(b, lambda r: r.update(schema_version=99))
    out = subprocess.run([sys.executable, "-m", "edgediff.cli", "info", str(b)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: bundle schema version 99")
    assert "Traceback" not in out.stderr


INT8_QUALITY = {"recipe": "diffusion", "method": "onnxruntime quantize_static", "preset": "avx2",
                "rel_error": 0.2, "rel_error_by_band": {"0-49": 0.3, "100-399": 0.04},
                "x0_rel_error_by_band": {"0-49": 0.007, "100-399": 0.015}, "psnr_vs_fp32_db": 28.4,
                "psnr_median_image_db": 33.0, "mean_abs_diff_255": 4.6,
                "images": {"n": 32, "ddim_steps": 25, "guidance": 3.0},
                "fd_delta": {"fd_lite0": {"fp32": 100.0, "int8": 102.0, "rel": 0.02}}}


def test_quality_int8_is_validated_printed_and_optional(tmp_path):
    b = make_bundle(tmp_path)
    assert open_bundle(b).quality.int8 is None  # an older bundle without the section still opens
    _edit(b, lambda r: r["quality"].update(int8=INT8_QUALITY))
    text = bundle_info(b)
    assert "ε rel error by t band 0-49 30.0%, 100-399 4.0%" in text
    assert "PSNR 28.4 dB (median image 33.0 dB)" in text and "fd_lite0: fp32 100.00 → int8 102.00 (+2.0%)" in text
    _edit(b, lambda r: r["quality"]["int8"].update(rel_error_by_band={"0-49": "big"}))
    with pytest.raises(BundleError, match="rel_error_by_band") as e:
        read_manifest(b)
    _one_line(e)
    _edit(b, lambda r: r["quality"]["int8"].update(rel_error_by_band={}, fd_delta={"fd_lite0": {"fp32": 1.0}}))
    with pytest.raises(BundleError, match="fd_delta"):
        read_manifest(b)
    _edit(b, lambda r: r["quality"].update(int8={"rel_error": 0.3, "method": "onnxruntime quantize_static"}))
    assert "ε rel error vs fp32 30.00% (pooled over t)" in bundle_info(b)  # a bundle from before the bands


DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "edgediff" / "default_bundle" / "manifest.json"


def test_typed_sections_write_back_the_manifest_they_read():
    """schedule, model_config and quality are parsed into dataclasses and written back unchanged (keys, values and
    their order): a rebuilt bundle's manifest.json is the format an older edgediff reads."""
    raw = json.loads(DEFAULT_MANIFEST.read_text())
    m = parse_manifest(raw)
    assert m.schedule == Schedule() and m.model_config.halo == m.halo and m.quality.int8["recipe"] == "diffusion"
    assert json.dumps(m.to_dict()) == json.dumps(raw)


@pytest.mark.parametrize("key, value", [("grid", 4), ("image_size", 64), ("channels", 1), ("snippet_dim", 32),
                                        ("halo", 0), ("backbone", "dis")])
def test_model_config_that_disagrees_with_the_top_level_geometry_is_refused(key, value):
    raw = json.loads(DEFAULT_MANIFEST.read_text())
    raw["model_config"][key] = value
    with pytest.raises(BundleError, match=f"model_config.{key}") as e:
        parse_manifest(raw)
    assert "re-export" in _one_line(e)
    del raw["model_config"][key]  # an older model_config without the key takes the top level's
    assert getattr(parse_manifest(raw).model_config, key) == raw[key]


def test_schedule_prediction_must_agree_with_the_top_level():
    raw = json.loads(DEFAULT_MANIFEST.read_text())
    raw["schedule"]["prediction"] = "v"
    with pytest.raises(BundleError, match="schedule.prediction") as e:
        parse_manifest(raw)
    _one_line(e)
    del raw["schedule"]["prediction"]
    assert parse_manifest(raw).schedule.prediction == "epsilon"
