"""`sample` checks --out / --out-dir before any sampling (format from the extension, a writable existing folder, no
folders created implicitly beyond --out-dir itself), writes the format the extension names, honours the umask,
names per-image files by seed and index, and supports --seed random; plus the small conveniences (--version,
`info` without an argument).
"""

from __future__ import annotations

import os

import pytest

from reliability_support import make_bundle, one_line, run_cli


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("outputs") / "bundle")


_main = run_cli


@pytest.fixture
def no_sampling(monkeypatch):
    """Any sampling at all fails the test: the refusals must come first."""
    import edgediff.runtime.sampler as sampler

    def forbidden(*a, **k):
        raise AssertionError("sampling started before the output was checked")

    monkeypatch.setattr(sampler, "sample_loop", forbidden)


@pytest.mark.parametrize("case", ["directory", "missing_folder", "unknown_extension", "out_dir_parent_missing",
                                  "out_dir_is_a_file", "no_extension"])
def test_bad_output_is_refused_before_sampling(bundle, tmp_path, monkeypatch, capsys, no_sampling, case):
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    out, extra = {
        "directory": (tmp_path / "a_dir", []),
        "missing_folder": (tmp_path / "nonexistent" / "dir" / "x.png", []),
        "unknown_extension": (tmp_path / "x.gif", []),
        "out_dir_parent_missing": (tmp_path / "x.png", ["--out-dir", str(tmp_path / "no" / "each")]),
        "out_dir_is_a_file": (tmp_path / "x.png", ["--out-dir", str(tmp_path / "a_file")]),
        "no_extension": (tmp_path / "a_new_folder", []),
    }[case]
    code, _, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--out", str(out),
                         *extra)
    assert code == 2 and one_line(err), err
    assert "--out" in err and "Traceback" not in err
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "no").exists()
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.gif").exists()
    if case in ("directory", "no_extension"):  # issue 24: it said "unknown image extension '(none)'"
        assert "name an image file" in err and "(none)" not in err, err


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff"), (".jpeg", b"\xff\xd8\xff"),
                                           (".webp", b"RIFF")])
def test_out_format_follows_the_extension(bundle, tmp_path, monkeypatch, capsys, suffix, magic):
    out = tmp_path / f"grid{suffix}"
    code, _, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--out", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(magic)
    from PIL import Image

    assert Image.open(out).format == {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[suffix]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_honour_the_umask(bundle, tmp_path, monkeypatch, capsys, umask, mode):
    old = os.umask(umask)
    try:
        code, _, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--seed", "7",
                             "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "each"))
    finally:
        os.umask(old)
    assert code == 0, err
    files = [tmp_path / "grid.png", *sorted((tmp_path / "each").iterdir())]
    assert [p.name for p in files[1:]] == ["seed7_0000.png", "seed7_0001.png"]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


def test_seed_random_prints_the_seed_and_names_files_by_it(bundle, tmp_path, monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--seed", "random",
                           "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "each"))
    assert code == 0, err
    seed = int(out.split("seed ", 1)[1].split()[0])
    assert f"pass --seed {seed} to repeat" in out
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [f"seed{seed}_0000.png", f"seed{seed}_0001.png"]
    again = tmp_path / "again.png"
    code, _, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--seed", str(seed),
                         "--out", str(again))
    assert code == 0 and again.read_bytes() == (tmp_path / "grid.png").read_bytes(), err


def test_plan_is_printed_before_sampling_starts(bundle, tmp_path, monkeypatch, capsys):
    import edgediff.runtime.sampler as sampler

    seen = {}
    real = sampler.sample_loop

    def spy(*a, **k):
        seen.setdefault("stdout_at_start", capsys.readouterr().out)
        return real(*a, **k)

    monkeypatch.setattr(sampler, "sample_loop", spy)
    code, _, err = _main(monkeypatch, capsys, "sample", str(bundle), "--n", "2", "--steps", "2", "--out",
                         str(tmp_path / "g.png"))
    assert code == 0, err
    assert "plan:" in seen["stdout_at_start"] and "sampling 2 image(s) × 2 DDIM steps, seed 0" in seen["stdout_at_start"]


def test_version_and_info_without_argument(monkeypatch, capsys):
    import edgediff

    code, out, _ = _main(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"edgediff {edgediff.__version__}"
    code, out, err = _main(monkeypatch, capsys, "info")
    assert code == 0, err
    assert "default_bundle" in out.splitlines()[0] and "training      step" in out
