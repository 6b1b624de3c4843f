"""Every numeric flag of every command is validated, through the real console entry point in a subprocess: a bad
value gives exactly one line on stderr that names the flag, a non-zero exit code, no traceback, and no output file.

A coverage test reads the numeric parameters off the typer app itself, so a numeric flag added later without a
case here fails the suite instead of going untested. Every case runs through `edgediff.cli.main` (the console entry
point) in this process; a sample of them also runs in fresh interpreters, which cost a torch or onnxruntime import
each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import tiny_model, write_images
from reliability_support import make_bundle

# (command, flag) -> list of (bad value(s), text the message must contain besides the flag)
# The placeholders RUN, BUNDLE, DATA, OUT are filled in by the `world` fixture.
BASE = {
    "train": ["train", "--data", "DATA", "--image-size", "16", "--grid", "2", "--steps", "2", "--batch-size", "4",
              "--out", "OUT", "--no-memory", "--dim", "8", "--mults", "1,2", "--sample-every", "0", "--device", "cpu"],
    "export": ["export", "RUN", "--out", "OUT", "--no-profile"],
    "sample": ["sample", "BUNDLE", "--n", "1", "--steps", "2", "--out", "OUT"],
    "eval": ["eval", "RUN", "--data", "DATA", "--n", "4", "--steps", "2"],
    "audit": ["audit", "RUN", "--data", "DATA", "--n", "4", "--steps", "2", "--out", "OUT", "--no-features"],
}

CASES: list[tuple[str, str, str]] = [
    ("train", "--image-size", "0"), ("train", "--image-size", "-16"), ("train", "--image-size", "100000"),
    ("train", "--grid", "0"), ("train", "--grid", "3"), ("train", "--grid", "-2"), ("train", "--halo", "-1"), ("train", "--halo", "99"),
    ("train", "--steps", "-5"), ("train", "--steps", "0"),
    ("train", "--batch-size", "0"), ("train", "--batch-size", "-4"),
    ("train", "--lr", "-1"), ("train", "--lr", "nan"), ("train", "--lr", "inf"),
    ("train", "--seed", "-1"),
    ("train", "--dim", "0"), ("train", "--depth", "0"), ("train", "--depth", "-3"),
    ("train", "--snippet-dropout", "1.5"), ("train", "--snippet-dropout", "-0.1"),
    ("train", "--snippet-element-dropout", "1.0"), ("train", "--snippet-element-dropout", "-0.5"),
    ("train", "--align", "-1"), ("train", "--align", "nan"), ("train", "--align-until", "-3"),
    ("train", "--checkpoint-every", "0"), ("train", "--sample-every", "-1"),
    ("train", "--ema-decay", "1.0"), ("train", "--ema-decay", "nan"),
    ("train", "--schedule-shift", "0.5"), ("train", "--schedule-shift", "nan"), ("train", "--schedule-shift", "100"),
    ("train", "--mults", "1,0"), ("train", "--mults", "1,x"),
    ("train", "--steps", "abc"), ("sample", "--steps", "abc"),
    ("export", "--lut-bytes", "0"), ("export", "--lut-bytes", "-8"), ("export", "--int8-images", "2"),
    ("sample", "--n", "0"), ("sample", "--n", "-1"), ("sample", "--n", "100000000"),
    ("sample", "--steps", "0"), ("sample", "--steps", "-3"), ("sample", "--steps", "5000"),
    ("sample", "--seed", "-1"),
    ("sample", "--memory-budget", "12XB"), ("sample", "--memory-budget", "0"), ("sample", "--memory-budget", "-5MiB"),
    ("sample", "--memory-budget", "1KB"),
    ("sample", "--snippet", "-100000"), ("sample", "--snippet", "100000"),
    ("sample", "--interpolate", "1,2,abc"), ("sample", "--interpolate", "1,2,1.5"), ("sample", "--interpolate", "0,99999,0.5"),
    ("sample", "--threads", "0"), ("sample", "--threads", "-2"),
    ("sample", "--cells-per-call", "0"), ("sample", "--cells-per-call", "-1"),
    ("sample", "--guidance", "-1"), ("sample", "--guidance", "nan"), ("sample", "--guidance", "25"),
    ("export", "--guidance", "-2"), ("export", "--guidance", "3"), ("eval", "--guidance", "50"),  # 3, 2: no bank
    ("eval", "--guidance", "2"),
    ("sample", "--strength", "0"), ("sample", "--strength", "nan"), ("sample", "--strength", "1.5"),
    ("export", "--strength", "0.5"), ("export", "--strength", "nan"),  # both without --base
    ("sample", "--cell-shift", "-1"), ("sample", "--cell-shift", "5"),  # the tiny bundle's cells are 8 px: 0..4
    ("export", "--cell-shift", "-2"), ("export", "--cell-shift", "99"),
    ("sample", "--eta", "-0.5"), ("sample", "--eta", "nan"), ("export", "--eta", "2"), ("eval", "--eta", "1.5"),
    ("eval", "--n", "0"), ("eval", "--steps", "0"), ("eval", "--seed", "-1"), ("eval", "--snippet", "-1"),
    ("audit", "--n", "0"), ("audit", "--steps", "0"), ("audit", "--seed", "-1"), ("audit", "--sigma", "-1"),
    ("audit", "--sigma", "nan"), ("audit", "--worst", "-1"),
]

MESSAGE_NAMES = {"--mults": ("--mults",), "--steps": ("--steps",)}


def _numeric_flags() -> set[tuple[str, str]]:
    """(command, flag) for every int / float option of the app, read off typer's own parameter objects."""
    import typer.main

    from edgediff.cli import app

    group = typer.main.get_command(app)
    found = set()
    for name, cmd in group.commands.items():
        for p in cmd.params:
            # the click parameter type says what the option parses (typer 0.12-0.28 keep no annotation on it)
            kind = type(p.type).__name__
            if kind in ("IntParamType", "FloatParamType", "IntRange", "FloatRange") and p.opts \
                    and p.opts[0].startswith("--"):
                found.add((name, p.opts[0]))
    return found


def test_every_numeric_flag_has_a_case():
    assert len(_numeric_flags()) > 20  # the scan itself must see the app's numeric options
    missing = _numeric_flags() - {(c, f) for c, f, _ in CASES}
    assert not missing, f"numeric flags without a validation case: {sorted(missing)}"


def _argv(world, command: str, flag: str, value: str, out: Path) -> list[str]:
    args = [world.get(a, a) for a in BASE[command]]
    args = [str(out) if a == "OUT" else a for a in args]
    if flag in args:  # replace the base value of this flag
        i = args.index(flag)
        args[i + 1] = value
    else:
        args += [flag, value]
    return [sys.executable, "-m", "edgediff.cli", *args]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny trained run, its image folder and a bundle for the commands to refuse to work on."""
    from edgediff.train import TrainConfig, train

    root = tmp_path_factory.mktemp("cli")
    data = write_images(root / "images", n=8, size=16)
    run = root / "run"
    train(TrainConfig(data=str(data), out=str(run), image_size=16, grid=2, steps=2, batch_size=4, memory=False,
                      sample_every=0, checkpoint_every=2, model=tiny_model(), device="cpu"), progress=False)
    return {"DATA": str(data), "RUN": str(run), "BUNDLE": str(make_bundle(root / "bundle")), "root": root}


def _out(world, i: int) -> Path:
    command = CASES[i][0]
    out = world["root"] / f"out_{i}" / ("bundle" if command == "export" else "o.png" if command == "sample" else "x")
    out.parent.mkdir(exist_ok=True)
    return out


def _check(command, flag, code, stderr, out: Path) -> None:
    lines = stderr.strip().splitlines()
    assert code != 0, "the bad value was accepted"
    assert "Traceback" not in stderr, stderr[-1500:]
    assert len(lines) == 1, stderr[-1500:]
    assert any(name in lines[0] for name in MESSAGE_NAMES.get(flag, (flag,))), lines[0]
    assert not out.exists() or (out.is_dir() and not any(out.iterdir())), "a failed command left output behind"


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c} {f} {v}" for c, f, v in CASES])
def test_bad_numeric_flag_is_one_line_naming_the_flag(world, i, capsys, monkeypatch):
    """In this process, through `edgediff.cli.main` (the console entry point itself), for speed."""
    from edgediff.cli import main

    command, flag, value = CASES[i]
    out = _out(world, i)
    monkeypatch.setattr(sys, "argv", _argv(world, command, flag, value, out)[2:])
    monkeypatch.chdir(world["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
        raise SystemExit(0)
    _check(command, flag, exit_.value.code, capsys.readouterr().err, out)


SUBPROCESS = [("train", "--grid", "3"), ("train", "--steps", "-5"), ("export", "--lut-bytes", "0"),
              ("sample", "--memory-budget", "12XB"), ("sample", "--steps", "abc"), ("sample", "--n", "0"),
              ("eval", "--n", "0"), ("audit", "--seed", "-1")]


def test_the_real_console_entry_point_behaves_the_same(world):
    """A few cases per command in fresh interpreters (`python -m edgediff.cli`), four at a time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")

    def run(case):
        i = CASES.index(case) if case in CASES else len(CASES)
        out = _out(world, i) if i < len(CASES) else world["root"] / "sub" / "o.png"
        out.parent.mkdir(exist_ok=True)
        proc = subprocess.run(_argv(world, *case, out), capture_output=True, text=True, timeout=600, env=env,
                              cwd=world["root"])
        return case, proc, out

    with ThreadPoolExecutor(4) as pool:
        for (command, flag, _), proc, out in pool.map(run, SUBPROCESS):
            assert proc.returncode == 2, (command, flag, proc.stderr[-800:])
            _check(command, flag, proc.returncode, proc.stderr, out)
