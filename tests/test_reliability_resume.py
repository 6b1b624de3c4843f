"""--resume is refused when it would train something else (other data, image size or memory settings, a missing
run, fewer steps than done) before anything is loaded or rewritten; a resume says where it continues from; and
the training log says what a user must know (skipped files, progress lines when stderr is not a terminal).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgediff.errors import EdgediffError
from edgediff.train import TrainConfig, train

from conftest import tiny_model, write_images
from reliability_support import one_line


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), image_size=16, grid=2, steps=4, batch_size=4, memory=False,
                sample_every=0, checkpoint_every=2, model=tiny_model(), device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = write_images(root / "images", n=8, size=16)
    other = write_images(root / "other", n=12, size=16, seed=1)
    train(_cfg(data, root / "run"), progress=False)
    return root, data, other


@pytest.fixture
def run(made, tmp_path):
    root, data, other = made
    return shutil.copytree(root / "run", tmp_path / "run"), data, other


@pytest.mark.parametrize("change", ["data", "image_size", "memory", "features"])
def test_resume_with_other_settings_is_refused_and_rewrites_nothing(run, tmp_path, change):
    run_dir, data, other = run
    kw = {"data": dict(), "image_size": dict(image_size=32), "memory": dict(memory=True),
          "features": dict(features=str(tmp_path / "f.npy"))}[change]
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(EdgediffError) as err:
        train(_cfg(other if change == "data" else data, run_dir, steps=6, **kw), resume=True, progress=False)
    flag = {"data": "--data", "image_size": "--image-size", "memory": "--no-memory", "features": "--features"}[change]
    assert one_line(str(err.value)) and flag in str(err.value), str(err.value)
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("change, flag, was, now", [
    (dict(lr=0.01), "--lr", "0.0002", "0.01"), (dict(batch_size=2), "--batch-size", "4", "2"),
    (dict(ema_decay=0.9), "--ema-decay", "0.999", "0.9"), (dict(snippet_dropout=0.5), "--snippet-dropout", "0.2", "0.5"),
    (dict(seed=3), "--seed", "0", "3"), (dict(grid=4), "--grid", "2", "4"), (dict(halo=2), "--halo", "0", "2"),
    (dict(precision="bf16"), "--precision", "auto", "bf16"),
    (dict(model=dict(tiny_model(), dim=16)), "--dim", "8", "16"), (dict(snippet_mode="gmem"), "--snippet-mode", "pca", "gmem"),
])
def test_resume_refuses_any_changed_setting_naming_flag_and_values(run, change, flag, was, now):
    """Issue 24: `--resume --lr 0.01` trained on silently with the new rate; a 2,000-step model became noise."""
    run_dir, data, _ = run
    before = _files(run_dir)
    with pytest.raises(EdgediffError) as err:
        train(_cfg(data, run_dir, steps=6, **change), resume=True, progress=False)
    msg = str(err.value)
    assert one_line(msg) and len(msg) < 300 and f"{flag} {was}, not {now}" in msg, msg
    assert _files(run_dir) == before


def test_an_override_changes_the_setting_and_is_recorded(run):
    run_dir, data, _ = run
    result = train(_cfg(data, run_dir, steps=6, lr=1e-3), resume=True, progress=False, overrides=("--lr",))
    assert result["steps"] == 6
    recorded = json.loads((run_dir / "run.json").read_text())["train"]
    assert recorded["lr"] == 1e-3 and recorded["overrides"] == [{"step": 4, "flag": "--lr", "was": 2e-4, "now": 1e-3}]
    assert "; resumed at step 4 with --lr 0.001 --override lr" in TrainConfig(**recorded).command()
    # the next resume compares with the overridden value; an architecture is never overridable
    train(_cfg(data, run_dir, steps=7, lr=1e-3), resume=True, progress=False)
    with pytest.raises(EdgediffError, match="--override grid: not a setting a resume may change"):
        train(_cfg(data, run_dir, steps=8, lr=1e-3, grid=4), resume=True, progress=False, overrides=("grid",))


def test_a_no_op_resume_changes_nothing_on_disk(run):
    run_dir, data, _ = run
    before = _files(run_dir)
    result = train(_cfg(data, run_dir, steps=4, checkpoint_every=1, sample_every=3), resume=True, progress=False)
    assert result["trained"] == 0 and _files(run_dir) == before


def test_resume_refuses_a_data_folder_whose_images_changed(run, tmp_path):
    run_dir, data, _ = run
    grown = shutil.copytree(data, tmp_path / "grown")
    recorded = json.loads((run_dir / "run.json").read_text())
    recorded["train"]["data"] = str(grown)
    (run_dir / "run.json").write_text(json.dumps(recorded))
    write_images(tmp_path / "extra", n=2, size=16, seed=5)
    for p in (tmp_path / "extra").iterdir():
        shutil.copy(p, grown / f"new_{p.name}")
    before = _files(run_dir)
    with pytest.raises(EdgediffError) as err:
        train(_cfg(grown, run_dir, steps=6), resume=True, progress=False)
    assert one_line(str(err.value)) and "changed since this run started (now 10 images)" in str(err.value)
    assert _files(run_dir) == before


def test_resume_of_a_missing_run_is_refused(made, tmp_path):
    _, data, _ = made
    for folder in (tmp_path / "nope", tmp_path):
        with pytest.raises(EdgediffError, match="holds no run"):
            train(_cfg(data, folder), resume=True, progress=False)
    assert not (tmp_path / "nope").exists()


def test_fewer_steps_than_done_is_one_line(run):
    run_dir, data, _ = run
    with pytest.raises(EdgediffError) as err:
        train(_cfg(data, run_dir, steps=3), resume=True, progress=False)
    assert one_line(str(err.value)) and "--steps 3" in str(err.value) and "4 steps" in str(err.value)


def test_resume_logs_its_step_and_a_relative_data_path_still_matches(run, monkeypatch):
    from edgediff.checkpoint import latest_checkpoint

    run_dir, data, _ = run
    before = latest_checkpoint(run_dir)[1]["train_seconds"]
    monkeypatch.chdir(data.parent)
    lines: list[str] = []
    result = train(_cfg(Path(data.name), run_dir, steps=6), resume=True, progress=False, log=lines.append)
    assert result["steps"] == 6 and result["trained"] == 2
    assert any(line.startswith("resumed from step 4 (") and "ckpt-000004" in line for line in lines), lines
    assert json.loads((run_dir / "run.json").read_text())["train"]["data"] == str(data.resolve())
    assert latest_checkpoint(run_dir)[1]["train_seconds"] > before > 0  # the training cost adds up over resumes


def test_log_names_skipped_files_and_prints_plain_progress_lines(tmp_path, capsys):
    """pytest captures stderr, so it is not a terminal here: progress comes as plain lines (stdout) at each
    checkpoint."""
    data = write_images(tmp_path / "images", n=8, size=16)
    (data / "broken.png").write_bytes(b"not a png")
    lines: list[str] = []
    train(_cfg(data, tmp_path / "run"), progress=True, log=lines.append)
    assert any("skipped 1 unreadable image file(s)" in line and "8 images" in line for line in lines), lines
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert steps[0].startswith("step 2/4  loss ") and steps[-1].startswith("step 4/4  loss "), lines


def test_preview_size_fits_the_training_it_follows():
    from edgediff.preview import preview_size

    assert preview_size(0.01, 8, 4, 4) == (16, 25)  # a tiny model: a preview of a second or two is always drawn
    # the case: --steps 1 at 384 px grid 4 (16 cells), ~10 s for a step of 64 cells: nothing fits, skip
    assert preview_size(10.0, 64, 1, 16) is None
    # after 500 such steps, 5% of ~83 min is 4 min: fewer images and steps than the full preview
    n, steps = preview_size(10.0, 64, 500, 16)
    assert n * steps < 16 * 25 and n * steps * 16 * 10.0 / (3 * 64) <= 0.05 * 10.0 * 500


def test_cli_resume_prints_its_step_and_nothing_to_do(made, tmp_path, monkeypatch, capsys):
    import sys

    from edgediff.cli import main

    _, data, _ = made
    base = ["edgediff", "train", "--data", str(data), "--image-size", "16", "--grid", "2", "--batch-size", "4",
            "--no-memory", "--dim", "8", "--mults", "1,2", "--sample-every", "0", "--checkpoint-every", "2",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", base + ["--steps", "4"])
    main()
    assert "trained to step 4 (4 steps this time" in capsys.readouterr().out
    base.append("--resume")
    monkeypatch.setattr(sys, "argv", base + ["--steps", "4"])
    main()
    out = capsys.readouterr().out
    assert "resumed from step 4" in out and "already at step 4 (= --steps): nothing to train" in out, out
    assert "nan" not in out
    monkeypatch.setattr(sys, "argv", base + ["--steps", "3"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(err) and "--steps 3 is fewer than the 4 steps" in err, err
