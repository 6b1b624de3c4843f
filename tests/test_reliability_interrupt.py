"""Ctrl-C in a real terminal: `python -m edgediff train|sample` under a pseudo-terminal whose line discipline turns
the ^C byte into SIGINT for the foreground process group, exactly as a user's keypress does. The command must exit
130 with one line saying what was kept, and leave no partial output.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import tiny_model, write_images
from reliability_support import make_bundle

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _make_controlling_tty() -> None:  # runs in the child: a new session whose controlling terminal is stdin
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # A user's shell starts a command with SIGINT at its default; a suite launched in the background (`nohup … &`)
    # would hand its children SIGINT *ignored*, and Python then never raises KeyboardInterrupt: reset it here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A child process on a pty, with its output collected as it comes."""

    def __init__(self, argv: list[str], cwd: Path):
        master, slave = os.openpty()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), COLUMNS="100", TERM="xterm")
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, preexec_fn=_make_controlling_tty)
        os.close(slave)
        self.master, self.text = master, ""

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.text += os.read(self.master, 65536).decode(errors="replace")
            except OSError:  # EIO: the child closed the terminal
                time.sleep(timeout)

    def wait_for(self, condition, limit: float = 300) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert self.proc.poll() is None, f"exited early ({self.proc.returncode}): {self.text[-2000:]}"
            assert time.monotonic() < deadline, f"timed out: {self.text[-2000:]}"
            self.pump(0.05)

    def ctrl_c(self) -> int:
        os.write(self.master, b"\x03")  # the terminal, not us, sends SIGINT to the foreground group
        deadline = time.monotonic() + 120
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.05)
        for _ in range(20):
            self.pump(0.01)
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code

    def final_lines(self) -> list[str]:
        """Lines after the progress bar: carriage returns redraw the bar, so keep what follows the last one (and
        drop the terminal's own echo of the keypress, ^C)."""
        clean = ANSI.sub("", self.text).replace("\r\n", "\n").replace("^C", "")
        return [line.split("\r")[-1].strip() for line in clean.split("\n") if line.split("\r")[-1].strip()]


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_naming_the_kept_checkpoint(tmp_path):
    data = write_images(tmp_path / "images", n=8, size=16)
    run = tmp_path / "run"
    m = tiny_model()
    term = Terminal([sys.executable, "-m", "edgediff", "train", "--data", str(data), "--image-size", "16", "--grid",
                     "2", "--steps", "100000", "--batch-size", "4", "--no-memory", "--dim", str(m["dim"]), "--mults",
                     "1,2", "--sample-every", "0", "--checkpoint-every", "3", "--device", "cpu", "--out", str(run)],
                    tmp_path)
    term.wait_for(lambda: (run / "checkpoints" / "latest.json").exists())
    code = term.ctrl_c()
    lines = term.final_lines()
    assert code == 130, term.text[-2000:]
    assert "Traceback" not in term.text, term.text[-3000:]
    from edgediff.checkpoint import latest_checkpoint

    tensor_path, meta = latest_checkpoint(run)
    assert lines[-1] == f"interrupted: kept {tensor_path} (step {meta['step']}); continue with --resume", lines[-3:]
    assert sum("interrupted" in line for line in lines) == 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_ctrl_c_during_sampling_exits_130_and_writes_nothing(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "samples.png"
    term = Terminal([sys.executable, "-m", "edgediff", "sample", str(bundle), "--n", "4000", "--steps", "1000",
                     "--out", str(out), "--out-dir", str(tmp_path / "each")], tmp_path)
    term.wait_for(lambda: "sampling [" in term.text)  # the bar: sampling has begun
    code = term.ctrl_c()
    lines = term.final_lines()
    assert code == 130, term.text[-2000:]
    assert "Traceback" not in term.text, term.text[-3000:]
    assert lines[-1] == "interrupted while sampling: no image written", repr(term.text[-600:])
    assert not out.exists() and not (tmp_path / "each").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
