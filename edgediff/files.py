"""Files on disk: written atomically (temp file, then rename) and identified by sha256.

Standard library only, so every side imports it (the device runtime, checkpoints, export, the benchmarks) without
pulling in numpy, pillow or torch: one home for "never leave a partial file" and "what is this file's digest".
Files get the permissions the user's umask asks for (a temp file is created 0600; it is widened before the rename).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from edgediff.errors import EdgediffError


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only be read by setting)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes, make_parents: bool = True) -> Path:
    """Write `data` to `path` through a temp file in the same folder; a clear error if the disk says no.
    `make_parents=False` for paths the user named: a missing folder is their typo, not ours to create."""
    path = Path(path)
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise EdgediffError(f"cannot write {path}: {e.strerror or e}; choose a writable location with free space") from e
    return path


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes already in memory (checkpoint files are hashed as they are written)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so that a large model file is never held in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
