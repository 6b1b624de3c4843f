"""The bundle: THE contract between export (torch side) and the device runtime (numpy side).

A bundle is one directory:
    manifest.json          the schema of manifest.py, versioned
    denoiser.onnx          fp32 denoiser (single file, dynamic batch)
    denoiser.int8.onnx     optional static-QDQ int8 denoiser
    lut_codes.npy          uint8 [entries, M] product-quantisation codes of the memory bank
    lut_codebooks.npy      float32 [M, 256, dim/M] codebooks

Both sides import this package: export builds a `Manifest` and calls `write_bundle`; the device calls
`open_bundle`, which refuses anything it cannot trust (unknown schema version, a path that leaves the bundle, a
missing file, a size or sha256 mismatch) with a one-line error *before* any model file is parsed.

    manifest.py   the schema: typed records and the constants naming a bundle's files (plain data)
    validate.py   decoded JSON → `Manifest`, every field checked; the manifest held to its ONNX file
    disk.py       find, read (once), checksum and atomically write bundle folders

The names below are re-exported so that `from edgediff.bundle import X` is the one import call sites need.
"""

from edgediff.bundle.disk import (DEFAULT_BUNDLE, file_entry, is_bundle, open_bundle, read_manifest, resolve,
                                  resolve_bundle, staging_dir, verify_files, write_bundle)
from edgediff.bundle.manifest import (FILE_ROLES, FILES, GEOMETRY_KEYS, MANIFEST_NAME, MAX_FILE_BYTES,
                                      MAX_MANIFEST_BYTES, ROLE, SCHEDULE_KINDS, SCHEMA_VERSION, BundleError,
                                      FileEntry, LutSpec, Manifest, MemoryProfile, Quality, TensorSpec,
                                      VariantProfile, variant_key)
from edgediff.bundle.validate import check_model_interface, expected_interface, parse_manifest, safe_relpath

__all__ = [
    "DEFAULT_BUNDLE", "FILE_ROLES", "FILES", "GEOMETRY_KEYS", "MANIFEST_NAME", "MAX_FILE_BYTES", "MAX_MANIFEST_BYTES",
    "ROLE", "SCHEDULE_KINDS", "SCHEMA_VERSION", "BundleError", "FileEntry", "LutSpec", "Manifest", "MemoryProfile",
    "Quality", "TensorSpec", "VariantProfile", "check_model_interface", "expected_interface", "file_entry",
    "is_bundle", "open_bundle", "parse_manifest", "read_manifest", "resolve", "resolve_bundle", "safe_relpath",
    "staging_dir", "variant_key", "verify_files", "write_bundle",
]
