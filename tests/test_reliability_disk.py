"""A full disk or an unwritable output: a clear one-line error, and no partial file (PNG, bundle or checkpoint) left
behind; what was there before (an earlier bundle, the last checkpoint) stays intact.

"Disk full" is real, not mocked, where a process can be given it: RLIMIT_FSIZE in a subprocess makes every write
past the limit fail with EFBIG (SIGXFSZ ignored), exactly where a full disk fails with ENOSPC. Export takes close to
a minute per real run here, so its disk-full case fails the ONNX write from inside (the same OSError, raised by the
writer) rather than training and exporting in a limited process.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgediff.bundle import open_bundle
from edgediff.checkpoint import latest_checkpoint, load_tensors
from edgediff.errors import EdgediffError
from edgediff.images import save_png

from conftest import write_images
from reliability_support import make_bundle, one_line


def _limited(limit_bytes: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited through exec: writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return pre


def _run_cli(args: list[str], limit: int | None, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "edgediff.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd, preexec_fn=_limited(limit) if limit else None)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_sample_png_on_a_full_disk(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "grid.png"
    proc = _run_cli(["sample", str(bundle), "--n", "16", "--steps", "2", "--out", str(out)], 1024, tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and str(out) in lines[0], proc.stderr[-1500:]
    assert not out.exists() and not _leftovers(outdir), _leftovers(outdir)
    ok = _run_cli(["sample", str(bundle), "--n", "16", "--steps", "2", "--out", str(out)], None, tmp_path)
    assert ok.returncode == 0 and out.stat().st_size > 1024  # the control: the same command, with room, writes it


@pytest.mark.parametrize("where", ["proc", "parent_is_a_file", "out_dir_is_a_file"])
def test_sample_to_an_unwritable_place(tmp_path, where):
    bundle = make_bundle(tmp_path / "bundle")
    (tmp_path / "a_file").write_text("x")
    args = ["sample", str(bundle), "--n", "2", "--steps", "2"]
    if where == "proc":
        args += ["--out", "/proc/edgediff_samples.png"]
    elif where == "parent_is_a_file":
        args += ["--out", str(tmp_path / "a_file" / "grid.png")]
    else:
        args += ["--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "a_file")]
    proc = _run_cli(args, None, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], proc.stderr[-1500:]
    assert not Path("/proc/edgediff_samples.png").exists()


def test_save_png_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    """Overwriting a PNG on a full disk: the error is clear and the old image is untouched (no truncation)."""
    import numpy as np

    path = tmp_path / "img.png"
    save_png(np.zeros((8, 8, 3), np.uint8), path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(EdgediffError, match="No space left on device") as err:
        save_png(np.full((8, 8, 3), 255, np.uint8), path)
    assert one_line(str(err.value))
    assert path.read_bytes() == before and not _leftovers(tmp_path)


def _train_args(data: Path, run: Path, steps: int) -> list[str]:
    return ["train", "--data", str(data), "--image-size", "16", "--grid", "2", "--steps", str(steps), "--batch-size",
            "4", "--out", str(run), "--no-memory", "--dim", "8", "--mults", "1,2", "--depth", "2", "--sample-every",
            "0", "--checkpoint-every", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A 4-step run with a checkpoint at step 4, made by the CLI."""
    root = tmp_path_factory.mktemp("disk_run")
    data = write_images(root / "images", n=8, size=16)
    run = root / "run"
    proc = _run_cli(_train_args(data, run, 4), None, root)
    assert proc.returncode == 0, proc.stderr[-1500:]
    return {"root": root, "data": data, "run": run}


def test_checkpoint_on_a_full_disk_keeps_the_last_one(short_run):
    """Resuming to step 8 with room for JSON but not for a checkpoint: one-line error, step 4 still loads."""
    run = short_run["run"]
    proc = _run_cli(_train_args(short_run["data"], run, 8) + ["--resume"], 64 * 1024, short_run["root"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "cannot write" in lines[0] and "ckpt-000008" in lines[0], proc.stderr[-1500:]
    tensor_path, meta = latest_checkpoint(run)
    assert meta["step"] == 4 and load_tensors(tensor_path)
    ckdir = run / "checkpoints"
    assert not (ckdir / "ckpt-000008.safetensors").exists() and not _leftovers(ckdir), _leftovers(ckdir)


def test_export_on_a_full_disk_leaves_no_bundle_and_keeps_the_old_one(short_run, tmp_path, monkeypatch):
    """The ONNX writer runs out of space half-way: one-line error; the earlier bundle at --out is untouched and no
    staging folder is left beside it."""
    import edgediff_export.bundle_writer as bw
    from edgediff_export import ExportOptions

    out = tmp_path / "bundle"
    make_bundle(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(model, config, path, *a, **k):
        Path(path).write_bytes(b"\x08" * 1000)  # what a writer leaves when the disk fills mid-file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(bw, "export_onnx", full_disk)
    with pytest.raises(EdgediffError) as err:
        bw.export_from_run(short_run["run"], out, ExportOptions(profile=False, overwrite=True))
    assert one_line(str(err.value)) and "No space left on device" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    open_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"], list(tmp_path.iterdir())


def test_failed_final_rename_puts_the_old_bundle_back(tmp_path, monkeypatch):
    """write_bundle's swap: if moving the new bundle into place fails, the earlier bundle is restored."""
    import edgediff.bundle.disk as bundle_mod

    out = make_bundle(tmp_path / "bundle", seed=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def replace(src, dst):
        if ".staging-" in str(src):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", replace)
    with pytest.raises(OSError):
        make_bundle(out, seed=1)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    open_bundle(out)
