"""What `edgediff export` tells a new user (issue 24, item 8): --int8 announces each pass of its work instead of
a silent minute, onnxruntime's calibration prints are not shown (they came twice), and the last line says what was
read (a training run at which step, or a bundle rebuilt) and what was written.
"""

from __future__ import annotations

import pytest

from edgediff_export import ExportOptions, export_run

CHATTER = ("Collecting tensor data", "Finding optimal threshold", "Number of tensors", "Percentile :")


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The tiny run exported with int8 (the default 'diffusion' recipe: two quantisation passes), without the
    measurement and the profile that do not concern these messages."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("messages") / "bundle"
    lines: list[str] = []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = export_run(run_dir, out, ExportOptions(int8=True, int8_measure=False, profile=False, calib_rows=256),
                            log=lines.append)
    return result, lines, printed.getvalue()


def test_int8_export_announces_its_passes_and_hides_onnxruntimes_prints(exported):
    _, lines, printed = exported
    assert not [c for c in CHATTER if c in printed], printed
    int8 = [line for line in lines if line.startswith("int8: ")]
    assert int8[0].startswith("int8: recipe diffusion, calibrating on ")
    assert any("(pass 1 of 2)" in line for line in int8) and any("(pass 2 of 2)" in line for line in int8), lines


def test_the_last_line_names_the_run_and_its_step(exported, run_dir):
    result, _, _ = exported
    summary = result.summary(run_dir)
    assert summary.startswith(f"exported training run {run_dir} at step 40 (EMA weights) → {result.out}: "), summary
    assert "denoiser.int8.onnx" in summary and f"'edgediff info {result.out}'" in summary


def test_a_rebuilt_bundle_says_it_was_rebuilt_from_a_bundle(exported, tmp_path):
    result, _, _ = exported
    again = export_run(result.out, tmp_path / "again", ExportOptions(profile=False))
    summary = again.summary(result.out)
    assert summary.startswith(f"rebuilt bundle {result.out} (training step 40) from its own fp32 ONNX as "
                              f"{tmp_path / 'again'}: "), summary
    assert "exported" not in summary and "run" not in summary.split(":")[0]
