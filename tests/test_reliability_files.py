"""Damaged bundle files: corrupted, truncated, extended or swapped between two bundles, they are caught by size and
sha256 before onnxruntime or numpy parses a byte of them; and files that are hostile yet correctly re-hashed
(someone rewrote the manifest too) still end in a one-line error, not a crash inside a parser.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgediff.bundle import BundleError, open_bundle
from edgediff.bundle_info import bundle_info
from edgediff.errors import EdgediffError

from reliability_support import load_manifest_dict, make_bundle, one_line, write_manifest_dict

ROLES = {"denoiser_fp32": "denoiser.onnx", "lut_codes": "lut_codes.npy", "lut_codebooks": "lut_codebooks.npy"}


def _flip_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x80])


CORRUPTIONS = {
    "one_bit_middle": _flip_middle,
    "one_bit_last_byte": _flip_last,
    "truncated_half": lambda d: d[: len(d) // 2],
    "truncated_one_byte": lambda d: d[:-1],
    "emptied": lambda d: b"",
    "extended": lambda d: d + b"\0",
    "same_size_garbage": lambda d: np.random.default_rng(0).integers(0, 256, len(d), dtype=np.uint8).tobytes(),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two bundles of identical layout and file sizes, from different seeds (so every file differs)."""
    root = tmp_path_factory.mktemp("file_bundles")
    a = make_bundle(root / "a", seed=0)
    b = make_bundle(root / "b", seed=1)
    for name in ROLES.values():
        assert (a / name).stat().st_size == (b / name).stat().st_size, name
        assert (a / name).read_bytes() != (b / name).read_bytes(), name
    return a, b


@pytest.fixture
def no_parsing(monkeypatch):
    """Fail the test if onnxruntime or numpy is asked to parse anything: the checksum must stop it first."""
    import onnxruntime as ort

    def refuse(*a, **k):
        pytest.fail(f"a damaged file reached a parser: {a[:1]}")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    monkeypatch.setattr(np, "load", refuse)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _sample(bundle: Path, out: Path | None = None, **kw):
    """Sample one image and, with `out`, write it as `edgediff sample` does (the runtime itself writes nothing)."""
    from edgediff.images import write_images
    from edgediff.runtime.sampler import sample_bundle

    result = sample_bundle(bundle, n=1, steps=2, seed=0, **kw)
    write_images(result.images, out, None)
    return result


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("role", sorted(ROLES))
def test_damaged_file_is_caught_by_checksum_before_parsing(bundles, tmp_path, no_parsing, role, corruption):
    bundle = _copy(bundles[0], tmp_path / "bundle")
    path = bundle / ROLES[role]
    damaged = CORRUPTIONS[corruption](path.read_bytes())
    path.write_bytes(damaged)
    out = tmp_path / "s.png"
    for attempt in (lambda: _sample(bundle, out=out), lambda: bundle_info(bundle), lambda: open_bundle(bundle)):
        with pytest.raises(BundleError) as err:
            attempt()
        message = str(err.value)
        assert one_line(message) and ROLES[role] in message
        assert ("sha256" in message) if len(damaged) == path.stat().st_size and corruption.startswith(
            ("one_bit", "same_size")) else True
    assert not out.exists()


@pytest.mark.parametrize("role", sorted(ROLES))
def test_file_swapped_from_another_bundle_is_caught(bundles, tmp_path, no_parsing, role):
    """Same name, same size, valid format, wrong bundle: only the sha256 can tell, and it does."""
    a, b = bundles
    bundle = _copy(a, tmp_path / "bundle")
    shutil.copyfile(b / ROLES[role], bundle / ROLES[role])
    with pytest.raises(BundleError, match="sha256") as err:
        _sample(bundle)
    assert one_line(str(err.value))


def test_manifest_swapped_from_another_bundle_is_caught(bundles, tmp_path, no_parsing):
    a, b = bundles
    bundle = _copy(a, tmp_path / "bundle")
    shutil.copyfile(b / "manifest.json", bundle / "manifest.json")
    with pytest.raises(BundleError, match="sha256"):
        _sample(bundle)


def test_missing_file_is_named(bundles, tmp_path, no_parsing):
    bundle = _copy(bundles[0], tmp_path / "bundle")
    (bundle / "lut_codes.npy").unlink()
    with pytest.raises(BundleError, match="lut_codes.npy.*missing") as err:
        _sample(bundle)
    assert one_line(str(err.value))


def test_file_replaced_by_a_directory_is_refused(bundles, tmp_path, no_parsing):
    bundle = _copy(bundles[0], tmp_path / "bundle")
    (bundle / "denoiser.onnx").unlink()
    (bundle / "denoiser.onnx").mkdir()
    with pytest.raises(BundleError):
        _sample(bundle)


def test_damaged_file_without_a_memory_profile_is_caught_before_profiling(tmp_path, no_parsing):
    """A bundle without a profile is measured on the device: the checksum still comes first."""
    bundle = make_bundle(tmp_path / "bundle", profile=False)
    path = bundle / "denoiser.onnx"
    path.write_bytes(_flip_middle(path.read_bytes()))
    with pytest.raises(BundleError, match="sha256"):
        _sample(bundle)


def test_the_undamaged_bundles_do_sample(bundles, tmp_path):
    """The control: without damage, both bundles pass the same checks and produce images."""
    for bundle in bundles:
        result = _sample(_copy(bundle, tmp_path / bundle.name), out=tmp_path / f"{bundle.name}.png")
        assert result.images.shape == (1, 16, 16, 3) and (tmp_path / f"{bundle.name}.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# hostile files with a manifest re-hashed to match: the checksum passes, the parsers must still not crash


def _rehash(bundle: Path, role: str) -> None:
    raw = load_manifest_dict(bundle)
    entry = raw["files"][role]
    data = (bundle / entry["path"]).read_bytes()
    entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    write_manifest_dict(bundle, raw)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _npy_claiming(shape: tuple, dtype=np.uint8) -> bytes:
    """A .npy whose header promises `shape` but whose body holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(16)


def _hostile(tmp_path: Path) -> dict[str, tuple[str, bytes]]:
    marker = str(tmp_path / "PWNED")
    pickled = _npy(np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return {
        "onnx_garbage": ("denoiser_fp32", b"\x08\x07" + os.urandom(512)),
        "onnx_empty": ("denoiser_fp32", b""),
        "onnx_is_a_npy": ("denoiser_fp32", _npy(np.zeros(4, np.float32))),
        "codes_pickled_object": ("lut_codes", pickled),
        "codes_garbage": ("lut_codes", os.urandom(300)),
        "codes_header_claims_40_GB": ("lut_codes", _npy_claiming((10**10, 4))),
        "codes_float": ("lut_codes", _npy(np.zeros((300, 4), np.float64))),
        "codes_wrong_shape": ("lut_codes", _npy(np.zeros((300, 3), np.uint8))),
        "codebooks_nan": ("lut_codebooks", _npy(np.full((4, 256, 2), np.nan, np.float32))),
        "codebooks_pickled_object": ("lut_codebooks", pickled),
        "codebooks_truncated_npy": ("lut_codebooks", _npy(np.zeros((4, 256, 2), np.float32))[:100]),
        "codebooks_too_few_centroids": ("lut_codebooks", _npy(np.zeros((4, 16, 2), np.float32))),  # codes reach 255
        "codebooks_wrong_rank": ("lut_codebooks", _npy(np.zeros((4, 512), np.float32))),
    }


HOSTILE = sorted(_hostile(Path("/nonexistent")))


@pytest.mark.parametrize("case", HOSTILE)
def test_rehashed_hostile_file_fails_in_one_line(bundles, tmp_path, case):
    role, data = _hostile(tmp_path)[case]
    bundle = _copy(bundles[0], tmp_path / "bundle")
    (bundle / ROLES[role]).write_bytes(data)
    _rehash(bundle, role)
    out = tmp_path / "s.png"
    with pytest.raises(EdgediffError) as err:
        _sample(bundle, out=out)
    assert one_line(str(err.value)), str(err.value)
    assert not out.exists()
    assert not (tmp_path / "PWNED").exists(), "a pickle in the bundle was executed"


def test_sample_cli_reports_a_damaged_bundle_in_one_line(bundles, tmp_path):
    """Through the console entry point: exit code 2, one line on stderr, no PNG written."""
    bundle = _copy(bundles[0], tmp_path / "bundle")
    path = bundle / "denoiser.onnx"
    path.write_bytes(_flip_middle(path.read_bytes()))
    out = tmp_path / "s.png"
    proc = subprocess.run([sys.executable, "-m", "edgediff.cli", "sample", str(bundle), "--n", "1", "--steps", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "sha256" in proc.stderr
    assert not out.exists()
