"""The manifest's schema: what a bundle's manifest.json holds, as typed records, and the constants that name its files.

Plain data only (no file access, no checks): validate.py turns a decoded manifest.json into these records and
refuses what it cannot trust; disk.py reads, checksums and writes bundles. Export and the device both build on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgediff.errors import EdgediffError
from edgediff.cells import HasCellGeometry
from edgediff.model_config import ModelConfig
from edgediff.schedule import Schedule

SCHEMA_VERSION = 1
SCHEDULE_KINDS = ("cosine",)  # what edgediff.schedule.Schedule can rebuild on the device
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 34  # 16 GiB: anything larger in a manifest is corrupt, not a model
# The one table of a bundle's files: role → file name as export writes it (manifest.files records the actual path).
FILES = {"denoiser_fp32": "denoiser.onnx", "denoiser_int8": "denoiser.int8.onnx",
         "lut_codes": "lut_codes.npy", "lut_codebooks": "lut_codebooks.npy"}
FILE_ROLES = tuple(FILES)
ROLE = {"fp32": "denoiser_fp32", "int8": "denoiser_int8"}  # precision variant → its denoiser's file role
# Geometry written twice, at the top level (what the device reads) and in model_config (what rebuilds the network):
# parse_manifest holds the two equal, so neither can silently disagree with the ONNX file the other describes.
GEOMETRY_KEYS = ("image_size", "channels", "grid", "backbone", "snippet_dim", "halo")


def variant_key(variant: str, mode: str) -> str:
    """How a (precision, session mode) pair is named in `memory_profile.variants`: the lean mode carries no suffix."""
    return variant if mode == "lean" else f"{variant}@{mode}"


class BundleError(EdgediffError):
    """A bundle that cannot be trusted or understood."""


@dataclass
class TensorSpec:
    """One ONNX input or output: name, element type and shape ('batch' for the dynamic dimension)."""

    name: str
    dtype: str
    shape: list


@dataclass
class FileEntry:
    """A file of the bundle, named relative to the bundle directory, with its size and sha256."""

    path: str
    sha256: str
    bytes: int


@dataclass
class LutSpec:
    """Layout of the product-quantised memory bank: entries × M uint8 codes, M codebooks of 256 × dim/M."""

    entries: int
    dim: int
    subvectors: int
    centroids: int = 256

    @property
    def bytes_per_entry(self) -> int:
        return self.subvectors


@dataclass
class VariantProfile:
    """Memory measured at export for one model variant, in MiB: what the planner budgets with."""

    resident_mb: float  # process RSS growth from creating the session
    activation_mb: dict[str, float]  # cells per call ("1", "2", "4") -> peak RSS growth of one call
    ms_per_call: dict[str, float] = field(default_factory=dict)


@dataclass
class MemoryProfile:
    baseline_mb: float  # fresh interpreter + numpy + onnxruntime imported
    variants: dict[str, VariantProfile]  # "fp32" / "int8"
    settings: dict[str, Any] = field(default_factory=dict)  # ORT settings the profile was measured with


@dataclass(frozen=True)
class Quality:
    """manifest.quality: what export measured about the files it wrote. Every section is optional (a bundle without
    int8 has no `int8`; older bundles lack newer sections); `other` keeps keys this version does not name (older
    bundles' fd_lite0 figures), so `info` still prints them and a rebuilt bundle carries them over."""

    parity_fp32: dict | None = None  # max_abs, rows, timesteps, tolerance: the fp32 ONNX against torch
    int8: dict | None = None  # how the int8 file was made and what it changes (edgediff_export.int8_quality)
    lut_mean_cosine: float | None = None  # the PQ lookup table's fidelity to the float bank
    lut_bytes_per_entry: int | None = None
    float_bank_bytes_per_entry: int | None = None
    ort_format: dict | None = None  # saved_at, max_abs_vs_onnx: the .ort files against their .onnx
    fp16_weights: dict | None = None  # max_abs_vs_fp32, bytes: the fp32 denoiser's weights stored as fp16
    other: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "other"}
        return {**{k: v for k, v in named.items() if v is not None}, **self.other}


@dataclass
class Manifest(HasCellGeometry):
    schema_version: int
    image_size: int
    channels: int
    grid: int
    patch_size: int
    snippet_dim: int
    backbone: str
    params: int
    schedule: Schedule  # written as {kind, num_train_timesteps, prediction}
    prediction: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, FileEntry]
    lut: LutSpec | None
    memory_profile: MemoryProfile | None
    model_config: ModelConfig | None = None  # the network's architecture; None (written {}): hand-made bundles
    training: dict = field(default_factory=dict)  # the command that made it, steps, data
    quality: Quality = field(default_factory=Quality)
    # sampler defaults the exporter recommends, e.g. {"guidance": 3.0}; optional, so older bundles stay valid
    sampling: dict = field(default_factory=dict)
    created: str = ""
    edgediff_version: str = ""
    halo: int = 0  # pixels of neighbouring cells each cell sees (edgediff.cells); absent in older bundles = 0

    def to_dict(self) -> dict:
        """The manifest.json object: each typed section written back as the plain object it is read from."""
        d = asdict(self)
        d["schedule"] = self.schedule.to_dict()
        d["model_config"] = {} if self.model_config is None else self.model_config.to_dict()
        d["quality"] = self.quality.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)
