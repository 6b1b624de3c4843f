"""Training killed with SIGKILL (no handler, no cleanup: a power cut as far as the process can tell) always leaves an
intact checkpoint behind, loses at most one checkpoint interval of work, and resumes to exactly the run an
uninterrupted process would have produced.

Trials: kills injected at fixed points inside checkpoint writes (half-written tensor file, before/after each fsync
and rename, between the three files, during pruning) and kills at random moments chosen by this process.
Each trial process is forked from a "zygote" that has imported torch but never run a tensor op (so forking is
safe): a trial then costs its training steps, not a fresh interpreter and a torch import.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgediff.checkpoint import latest_checkpoint, load_tensors

from conftest import tiny_model, write_images

STEPS, EVERY = 16, 4
TEMP_SUFFIX = ".tmp"

ZYGOTE = r'''
import json, os, signal, sys, traceback
import torch
import torch._dynamo  # imported lazily by the first optimizer otherwise: ~2 s per child, paid once here
from torch.optim.optimizer import register_optimizer_step_post_hook
import edgediff.images
from edgediff.train import TrainConfig, train
from pathlib import Path

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def arm(spec):
    """Kill this process at the n-th call of one of the primitives a checkpoint write goes through."""
    what, n = spec.split(":")
    n = int(n)
    count = {"k": 0}

    def hit():
        count["k"] += 1
        return count["k"] == n

    if what == "write_half":  # the file object of atomic_write_bytes: write half, make it durable, die
        real_fdopen = os.fdopen
        class Half:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *a): return self.f.__exit__(*a)
            def write(self, data):
                if hit():
                    self.f.write(data[: len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno()); die()
                return self.f.write(data)
            def __getattr__(self, k): return getattr(self.f, k)
        os.fdopen = lambda *a, **k: Half(real_fdopen(*a, **k))
    elif what in ("fsync", "replace_before", "replace_after", "unlink"):
        name = {"fsync": "fsync", "replace_before": "replace", "replace_after": "replace", "unlink": "unlink"}[what]
        if name == "unlink":
            real = Path.unlink
            def unlink(self, *a, **k):
                if hit(): die()
                return real(self, *a, **k)
            Path.unlink = unlink
            return
        real = getattr(os, name)
        def wrapped(*a, **k):
            if what != "replace_after" and hit(): die()
            r = real(*a, **k)
            if what == "replace_after" and hit(): die()
            return r
        setattr(os, name, wrapped)
    else:
        raise ValueError(spec)

def child(job):
    torch.set_num_threads(1)
    fd = os.open(job["progress"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    register_optimizer_step_post_hook(lambda opt, a, k: os.write(fd, b"."))
    if job.get("kill"):
        arm(job["kill"])
    result = train(TrainConfig(**job["cfg"]), resume=job["resume"], progress=False)
    Path(job["result"]).write_text(json.dumps({"losses": result["losses"], "steps": result["steps"]}))

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(job)
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 3
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"pid": pid, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
'''


class Zygote:
    """One long-lived process with torch imported; `run` forks a training child and returns its pid/outcome."""

    def __init__(self, workdir: Path):
        script = workdir / "zygote.py"
        script.write_text(ZYGOTE)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=workdir)

    def start(self, job: dict) -> int:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = write_images(root / "images", n=8, size=16)
    zygote = Zygote(root)
    yield {"root": root, "data": data, "zygote": zygote}
    zygote.close()


def _cfg(lab, out: Path) -> dict:
    return dict(data=str(lab["data"]), out=str(out), image_size=16, grid=2, steps=STEPS, batch_size=4, memory=False,
                sample_every=0, checkpoint_every=EVERY, lr=2e-3, warmup_steps=5, model=tiny_model(), device="cpu")


def _job(lab, out: Path, *, resume: bool, kill: str | None = None) -> dict:
    return {"cfg": _cfg(lab, out), "resume": resume, "kill": kill, "progress": str(out) + ".progress",
            "result": str(out) + ".result.json"}


@pytest.fixture(scope="module")
def reference(lab):
    """The uninterrupted run every resumed one must reproduce."""
    out = lab["root"] / "reference"
    zy = lab["zygote"]
    zy.start(_job(lab, out, resume=False))
    status = zy.wait()
    assert status["code"] == 0, status
    tensors = load_tensors(latest_checkpoint(out)[0])
    return {"losses": json.loads(Path(str(out) + ".result.json").read_text())["losses"], "tensors": tensors}


def _progress(out: Path) -> int:
    p = Path(str(out) + ".progress")
    return p.stat().st_size if p.exists() else 0


def _check_after_kill(out: Path) -> dict:
    """The state a kill leaves: an intact checkpoint (or none yet) at most one interval behind the work done."""
    done = _progress(out)
    found = latest_checkpoint(out) if (out / "checkpoints").exists() else None
    if found is None:
        assert done <= EVERY, f"{done} steps done but no checkpoint survived"
        return {"done": done, "resumed_from": 0, "temps": 0}
    tensor_path, meta = found
    tensors = load_tensors(tensor_path)  # parses: the file is complete and valid safetensors
    assert any(k.startswith("ema.") for k in tensors) and any(k.startswith("opt.") for k in tensors)
    step = int(meta["step"])
    assert len(meta["losses"]) == step
    assert step <= done and done - step <= EVERY, f"checkpoint at {step} after {done} steps"
    temps = len([p for p in (out / "checkpoints").iterdir() if p.name.endswith(TEMP_SUFFIX)])
    return {"done": done, "resumed_from": step, "temps": temps}


def _resume_and_compare(lab, out: Path, reference: dict) -> None:
    zy = lab["zygote"]
    zy.start(_job(lab, out, resume=True))
    status = zy.wait()
    assert status["code"] == 0, status
    result = json.loads(Path(str(out) + ".result.json").read_text())
    assert result["steps"] == STEPS
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-6, atol=1e-7)
    final = load_tensors(latest_checkpoint(out)[0])
    for k in ("model.", "ema."):
        for name, ref in reference["tensors"].items():
            if name.startswith(k):
                np.testing.assert_allclose(final[name].numpy(), ref.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert not leftovers, f"temp files of the killed writes were never cleaned up: {leftovers}"


# Counting primitive calls: run.json is the first atomic write; then each checkpoint writes tensors, JSON and
# latest.json (3 writes, 3 fsyncs, 3 renames); pruning (2 unlinks) starts at the third checkpoint.
def _nth(checkpoint: int, file: int) -> int:
    return 1 + 3 * (checkpoint - 1) + file + 1


INJECTED = {
    "tensors half-written (1st checkpoint)": f"write_half:{_nth(1, 0)}",
    "tensors half-written (2nd checkpoint)": f"write_half:{_nth(2, 0)}",
    "tensors written, before fsync": f"fsync:{_nth(2, 0)}",
    "tensors renamed, JSON not yet written": f"replace_after:{_nth(2, 0)}",
    "JSON half-written": f"write_half:{_nth(2, 1)}",
    "JSON written, before rename": f"replace_before:{_nth(2, 1)}",
    "latest.json half-written": f"write_half:{_nth(3, 2)}",
    "latest.json written, before rename": f"replace_before:{_nth(3, 2)}",
    "latest.json renamed, before pruning": f"replace_after:{_nth(3, 2)}",
    "between the two unlinks of pruning": "unlink:2",
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(INJECTED))
def test_kill_inside_a_checkpoint_write_resumes_intact(lab, reference, point):
    out = lab["root"] / ("inj_" + "".join(c if c.isalnum() else "_" for c in point))
    zy = lab["zygote"]
    zy.start(_job(lab, out, resume=False, kill=INJECTED[point]))
    status = zy.wait()
    assert status["signal"] == signal.SIGKILL, f"the kill point was never reached: {status}"
    _check_after_kill(out)
    _resume_and_compare(lab, out, reference)


RANDOM_TRIALS = 6


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_kill_at_a_random_moment_resumes_intact(lab, reference, trial):
    rng = random.Random(1000 + trial)
    out = lab["root"] / f"random_{trial}"
    zy = lab["zygote"]
    target = rng.randint(1, STEPS - EVERY)
    delay = rng.uniform(0.0, 0.03)
    pid = zy.start(_job(lab, out, resume=False))
    deadline = time.monotonic() + 120
    while _progress(out) < target and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    status = zy.wait()
    assert status["signal"] == signal.SIGKILL, f"finished before the kill: {status}"
    state = _check_after_kill(out)
    print(f"trial {trial}: killed after {state['done']} steps (target {target} + {delay * 1000:.1f} ms), "
          f"resumed from {state['resumed_from']}, {state['temps']} temp file(s) left by the kill")
    _resume_and_compare(lab, out, reference)
