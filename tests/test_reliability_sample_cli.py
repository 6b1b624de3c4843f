"""What a new user met on the device side (issue 24, items 10-13), through the console entry point in this process:
Ctrl-C keeps the images already finished; `sample RUN` says to export first; `eval` / `audit` without a path use
the shipped bundle as `sample` / `info` do; an int8 denoiser that failed its quality gate, or a damaged one, is
named in a warning; bad requests are refused before anything is printed; the plan is in plain words, its tuning
knobs only with --verbose.

The bundles are the reliability tests' hand-built ones (milliseconds to make); `with_int8` adds an "int8" denoiser
(a copy of the fp32 graph: the runtime only needs a file, a manifest entry and a profile for it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgediff.errors import EdgediffError, Interrupted
from reliability_support import make_bundle, one_line, run_cli

GATE_PASSES = {"rel_error_by_band": {"100-399": 0.01, "400-699": 0.01}, "psnr_vs_fp32_db": 40.0,
               "fd_delta": {"fd_lite0": {"fp32": 1.0, "int8": 1.0, "rel": 0.0},
                            "fd_independent": {"fp32": 1.0, "int8": 1.0, "rel": 0.0}}}
GATE_FAILS = {**GATE_PASSES, "psnr_vs_fp32_db": 12.0}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("sample_cli") / "bundle")


def with_int8(src: Path, dst: Path, quality: dict, fp32_extra_mb: float = 0.0) -> Path:
    """A copy of `src` that also ships an int8 denoiser with the quality record `quality`; `fp32_extra_mb` makes the
    fp32 variant's resident memory larger, so that a budget can leave int8 as the only plan that fits."""
    from edgediff.files import sha256_file

    shutil.copytree(src, dst)
    shutil.copy(dst / "denoiser.onnx", dst / "denoiser.int8.onnx")
    raw = json.loads((dst / "manifest.json").read_text())
    raw["files"]["denoiser_int8"] = {"path": "denoiser.int8.onnx", "sha256": sha256_file(dst / "denoiser.int8.onnx"),
                                     "bytes": (dst / "denoiser.int8.onnx").stat().st_size}
    variants = raw["memory_profile"]["variants"]
    for mode in ("", "@fast"):
        variants[f"int8{mode}"] = json.loads(json.dumps(variants[f"fp32{mode}"]))
        variants[f"fp32{mode}"]["resident_mb"] += fp32_extra_mb
    raw["quality"]["int8"] = quality
    (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


_main = run_cli


def _fresh(*args: str) -> tuple[int, str, str]:
    """The command line in a fresh process: budgets are judged against the whole process's RSS, which in this
    test process depends on every test that ran before (torch, other models)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "edgediff.cli", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def _plan_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("plan:"))


# --- item 10: Ctrl-C keeps the finished images ------------------------------------------------------------------


def test_ctrl_c_keeps_the_images_already_finished(bundle, tmp_path, monkeypatch):
    """One image per pass; Ctrl-C during the second pass: the first image is on disk, complete and identical to
    the same image of an uninterrupted run, and the interrupt line says how many were kept where."""
    import edgediff.runtime.sampler as sampler
    from PIL import Image

    from edgediff.runtime.sample_files import sample_to_files
    from edgediff.runtime.sampler import SampleRequest

    request = SampleRequest(n=3, steps=2, seed=5, images_per_pass=1)
    full = sample_to_files(bundle, request, None, tmp_path / "full", log=lambda s: None)
    real, calls = sampler.sample_loop, []

    def interrupted_on_second_pass(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sampler, "sample_loop", interrupted_on_second_pass)
    each = tmp_path / "each"
    with pytest.raises(Interrupted) as caught:
        sample_to_files(bundle, request, tmp_path / "grid.png", each, log=lambda s: None)
    assert str(caught.value) == (f"interrupted while sampling: kept 1 of 3 image(s) in {each} (seed5_0000.png to "
                                 "seed5_0000.png), each complete")
    assert sorted(p.name for p in each.iterdir()) == ["seed5_0000.png"]  # no temp file, no later image
    assert np.array_equal(np.asarray(Image.open(each / "seed5_0000.png")), full.images[0])
    assert not (tmp_path / "grid.png").exists()


# --- item 11: the default bundle for eval / audit; a run passed to sample -----------------------------------------


def test_sample_of_a_training_run_says_to_export_it_first(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    code, out, err = _main(monkeypatch, capsys, "sample", str(run), "--out", str(tmp_path / "x.png"))
    assert code == 2 and one_line(err) and not out, (out, err)
    assert err.strip() == f"error: {run} is a training run: export it first with 'edgediff export {run} --out BUNDLE'"


@pytest.mark.parametrize("command", ["eval", "audit"])
def test_eval_and_audit_without_a_path_use_the_shipped_bundle(command, monkeypatch, capsys):
    """Stopped where the source has been resolved (the data step): no usage error about RUN_DIR comes first."""
    import edgediff.audit as audit_mod
    import edgediff.evaluate as evaluate_mod
    from edgediff.bundle import DEFAULT_BUNDLE

    def stop(source, *a, **k):
        raise EdgediffError(f"reached the data step with {source.kind} {source.path}")

    monkeypatch.setattr(evaluate_mod, "resolve_data", stop)
    monkeypatch.setattr(audit_mod, "_training_set", stop)
    code, _, err = _main(monkeypatch, capsys, command, "--n", "4")
    assert code == 2 and err.strip() == f"error: reached the data step with bundle {DEFAULT_BUNDLE}", err


def test_the_default_bundles_audit_is_written_beside_the_user_not_into_the_package():
    from edgediff.audit import audit_source, default_out
    from edgediff.bundle import DEFAULT_BUNDLE

    source = audit_source(None, None)
    assert source.path == DEFAULT_BUNDLE
    assert default_out(source) == Path("default_bundle_audit")


# --- item 12: warnings about int8, and refusals before anything is printed ----------------------------------------


@pytest.mark.parametrize("flag", [["--snippet", "99999"], ["--interpolate", "1,2"], ["--interpolate", "0,99999,0.5"]])
def test_bad_snippet_requests_are_refused_before_anything_is_printed(bundle, tmp_path, monkeypatch, capsys, flag):
    code, out, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--out",
                           str(tmp_path / "x.png"), *flag)
    assert code == 2 and one_line(err) and flag[0] in err, err
    assert out == ""  # not even the plan


def test_a_damaged_int8_file_is_named_and_planned_around(bundle, tmp_path, monkeypatch, capsys):
    b = with_int8(bundle, tmp_path / "b", GATE_PASSES)  # int8 passes its gate: auto would run it first
    flip_a_byte(b / "denoiser.int8.onnx")
    code, out, err = _main(monkeypatch, capsys, "sample", str(b), "--n", "2", "--steps", "2", "--out",
                           str(tmp_path / "x.png"))
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "denoiser.int8.onnx fails its sha256 check" in warnings[0], out
    assert "intact fp32 denoiser" in warnings[0] and _plan_line(out).startswith("plan: fp32 denoiser")
    code, out, err = _main(monkeypatch, capsys, "sample", str(b), "--n", "2", "--steps", "2", "--precision", "int8",
                           "--out", str(tmp_path / "y.png"))
    assert code == 2 and one_line(err) and "denoiser.int8.onnx fails its sha256 check" in err, err
    assert out == "" and not (tmp_path / "y.png").exists()


def test_int8_that_failed_its_gate_is_named_when_pinned(bundle, tmp_path, monkeypatch, capsys):
    b = with_int8(bundle, tmp_path / "b", GATE_FAILS)
    code, out, err = _main(monkeypatch, capsys, "sample", str(b), "--n", "2", "--steps", "2", "--precision", "int8",
                           "--out", str(tmp_path / "x.png"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("warning: running the int8 denoiser although it failed the bundle's quality gate "
                               "(PSNR vs fp32 12.0 dB"), out
    assert "drop --precision int8" in lines[0] and _plan_line(out).startswith("plan: int8 denoiser")
    code, out, _ = _main(monkeypatch, capsys, "sample", str(b), "--n", "2", "--steps", "2", "--out",
                         str(tmp_path / "y.png"))
    assert "warning" not in out and _plan_line(out).startswith("plan: fp32 denoiser")  # auto: fp32, no warning


def test_int8_forced_by_the_budget_is_named_with_the_budget_fp32_needs(bundle, tmp_path, monkeypatch, capsys):
    b = with_int8(bundle, tmp_path / "b", GATE_FAILS, fp32_extra_mb=40.0)
    _, _, err = _fresh("sample", str(b), "--n", "1", "--steps", "2", "--memory-budget", "1MiB",
                       "--out", str(tmp_path / "x.png"))
    floor = int(err.split("pass --memory-budget ")[1].split("MiB")[0])
    code, out, err = _fresh("sample", str(b), "--n", "1", "--steps", "2", "--memory-budget", f"{floor + 5}MiB",
                            "--out", str(tmp_path / "x.png"))
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "failed the bundle's quality gate" in warnings[0], out
    need = int(warnings[0].split("fp32 needs --memory-budget ")[1].split("MiB")[0])
    assert need > floor + 30


# --- item 13: the default budget, said the same way by --help and the plan; knobs under --verbose -----------------


def test_help_and_plan_agree_on_the_default_budget_and_knobs_wait_for_verbose(bundle, tmp_path, monkeypatch, capsys):
    import typer.main

    from edgediff.cli import app

    params = {p.name: p for p in typer.main.get_command(app).commands["sample"].params}
    assert "plus half the available memory" in params["memory_budget"].help
    code, out, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--out",
                           str(tmp_path / "x.png"))
    assert code == 0, err
    plan = _plan_line(out)
    assert "budget " in plan and "(the default: this process plus half the available memory)" in plan, plan
    assert "no budget" not in plan and "arena" not in plan and "tuning:" not in out
    code, out, err = _fresh("sample", str(bundle), "--n", "2", "--steps", "2", "--verbose", "--memory-budget",
                            "300MiB", "--out", str(tmp_path / "x.png"))
    assert code == 0, err
    assert _plan_line(out).endswith("budget 300.0 MiB")
    tuning = [line for line in out.splitlines() if line.startswith("tuning:")]
    assert len(tuning) == 1 and "arena capped at" in tuning[0] and "leanest plan peaks at" in tuning[0], out
