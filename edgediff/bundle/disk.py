"""Bundles on disk: find one, read its manifest (once), check each file's size and sha256 before anything parses it,
and write a new bundle atomically (export side).

The device gets a manifest it acts on only through `open_bundle` (or `read_manifest` followed by `verify_files` on
the same `Manifest`, as the sampler does to checksum only what its plan will read): never by parsing twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgediff.bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, BundleError, FileEntry, Manifest
from edgediff.bundle.validate import parse_manifest, safe_relpath
from edgediff.errors import EdgediffError
from edgediff.files import sha256_file

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "default_bundle"  # the trained bundle shipped in the package


def is_bundle(path: str | Path) -> bool:
    """The one rule for "is this folder a bundle": it holds a manifest and no training checkpoints (a run folder
    with a stray manifest is still a run). eval, audit, export and train --init-from all ask here."""
    path = Path(path)
    return (path / MANIFEST_NAME).is_file() and not (path / "checkpoints").is_dir()


def resolve_bundle(bundle_dir: str | Path | None) -> Path:
    """The bundle to use: the given folder or shipped model's name (edgediff.shipped), else the default bundle
    shipped in the package (if installed). A
    training run in its place is named as one, with the command that makes a bundle of it: "not an edgediff
    bundle (re-export it)" sent a new user looking for a bundle they never had."""
    from edgediff.shipped import expand

    if bundle_dir is not None:
        path = expand(bundle_dir)
        if not is_bundle(path) and ((path / "checkpoints").is_dir() or (path / "run.json").is_file()):
            raise EdgediffError(f"{path} is a training run: export it first with 'edgediff export {path} --out "
                                "BUNDLE'")
        return path
    if not (DEFAULT_BUNDLE / MANIFEST_NAME).is_file():
        raise EdgediffError("no default bundle is installed in this edgediff package yet; pass BUNDLE_DIR "
                            "(a folder written by `edgediff export`)")
    return DEFAULT_BUNDLE

def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and validate manifest.json only (no file checks): for `edgediff info` and the planner's first look."""
    root = Path(bundle_dir)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory; pass the folder that `edgediff export` wrote")
    if not path.is_file():
        raise BundleError(f"{path} is missing; this is not an edgediff bundle (re-export it)")
    if path.resolve().parent != root.resolve():  # a symlinked manifest.json could make us read any file
        raise BundleError(f"{path} is a link to a file outside the bundle; refusing it: re-export the bundle")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes; the bundle is corrupt, re-export it")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 / JSON, ints over Python's digit limit, deep nesting
        raise BundleError(f"{path} is not valid JSON ({e.__class__.__name__}); the bundle is corrupt, re-export it") from None
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror or e}; check the bundle's permissions") from None
    return parse_manifest(raw)


def resolve(bundle_dir: str | Path, entry: FileEntry) -> Path:
    """Absolute path of a bundle file, re-checked to be inside the bundle even through symlinks."""
    root = Path(bundle_dir).resolve()
    target = (root / safe_relpath(entry.path)).resolve()
    if root not in target.parents:
        raise BundleError(f"bundle file {entry.path!r} resolves outside the bundle; refusing it")
    return target


def verify_files(bundle_dir: str | Path, manifest: Manifest, roles: tuple[str, ...] | None = None) -> None:
    """Check size and sha256 of each listed file (all when `roles` is None) before anything parses it."""
    for role, entry in manifest.files.items():
        if roles is not None and role not in roles:
            continue
        path = resolve(bundle_dir, entry)
        if not path.is_file():
            raise BundleError(f"bundle file {entry.path} ({role}) is missing; re-download or re-export the bundle")
        size = path.stat().st_size
        if size != entry.bytes:
            raise BundleError(
                f"bundle file {entry.path} has {size} bytes, the manifest says {entry.bytes}: it is truncated or "
                "replaced; re-download or re-export the bundle"
            )
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"bundle file {entry.path} fails its sha256 check: it is corrupt or was swapped; "
                              "re-download or re-export the bundle")


def open_bundle(bundle_dir: str | Path, roles: tuple[str, ...] | None = None) -> Manifest:
    """Read, validate and checksum a bundle; the only way the device should get a manifest it will act on."""
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest, roles)
    return manifest

def file_entry(bundle_dir: str | Path, rel: str) -> FileEntry:
    path = Path(bundle_dir) / rel
    return FileEntry(path=rel, sha256=sha256_file(path), bytes=path.stat().st_size)


def write_bundle(out_dir: str | Path, manifest: Manifest, staged_dir: str | Path) -> Path:
    """Move a fully written staging folder into place as `out_dir`, with manifest.json written last.

    Export writes every file into `staged_dir` (a temp folder beside `out_dir`); this adds the manifest and swaps
    the folder in with renames, so a crash leaves either the old bundle or the new one, never half of one.
    """
    out, staged = Path(out_dir), Path(staged_dir)
    for role, entry in manifest.files.items():
        actual = file_entry(staged, entry.path)
        if actual != entry:
            raise BundleError(f"staged file {entry.path} ({role}) does not match its manifest entry; export again")
    parse_manifest(json.loads(manifest.to_json()))  # never write what the device would refuse
    with open(staged / MANIFEST_NAME, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    # mkdtemp/mkstemp create owner-only files; a bundle is shipped and installed as package data, so make it
    # world-readable like any other file a release contains.
    os.chmod(staged, 0o755)
    for f in staged.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(staged, out)
    except OSError:
        if old is not None:  # put the earlier bundle back rather than leave no bundle at all
            os.replace(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def staging_dir(out_dir: str | Path) -> Path:
    """A fresh temp folder on the same file system as `out_dir`, so the final rename is atomic."""
    out = Path(out_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as e:
        raise EdgediffError(f"cannot write the bundle at {out}: {e.strerror or e}; choose a writable --out") from e
