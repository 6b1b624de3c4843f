"""The device runtime on a real (tiny, untrained) bundle: torch-free sampling, determinism across plans, parity
with the torch sampler, the budget refusal, the arena cap and the memory profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime_support import untrained_bundle

REPO = Path(__file__).resolve().parents[1]
BLOCK_TORCH = (
    "import sys\n"
    "class _NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is blocked in this test')\n"
    "        return None\n"
    "sys.meta_path.insert(0, _NoTorch())\n"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny16"
    return untrained_bundle(out)


@pytest.fixture(scope="module")
def tiny_halo(tmp_path_factory):
    """The same tiny model with 4 px halo cells: bigger inputs per cell, profiled at that shape by export."""
    out = tmp_path_factory.mktemp("bundles") / "tiny16_halo"
    return untrained_bundle(out, halo=4)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_samples_with_torch_unimportable(tiny, tmp_path):
    bundle, _, _ = tiny
    code = BLOCK_TORCH + (
        "from edgediff.cli import main\n"
        "sys.argv = ['edgediff'] + sys.argv[1:]\n"
        "main()\n"
        "assert 'torch' not in sys.modules\n"
        "assert 'pydantic' not in sys.modules, 'typer>=0.29 pulls pydantic into every run (+8 MiB): see pyproject'\n"
        "try:\n    import torch\nexcept ImportError:\n    print('torch-blocked-ok')\n"
    )
    out = tmp_path / "grid.png"
    r = _run(code, "sample", str(bundle), "--n", "4", "--steps", "3", "--out", str(out),
             "--out-dir", str(tmp_path / "each"), "--memory-budget", "400MiB")
    assert r.returncode == 0, r.stderr
    assert "torch-blocked-ok" in r.stdout
    assert "plan:" in r.stdout and "peak RSS" in r.stdout and "wall time" in r.stdout
    from PIL import Image

    assert Image.open(out).size[0] > 2 * 16
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [f"seed0_{i:04d}.png" for i in range(4)]
    peak = float(r.stdout.split("peak RSS ")[1].split(" MiB")[0])
    assert peak <= 400


def test_same_images_whatever_cells_per_call_threads_and_passes(tiny):
    from edgediff.runtime.sampler import sample_bundle

    bundle, _, _ = tiny
    runs = [
        dict(cells_per_call=1, threads=1, images_per_pass=1),
        dict(cells_per_call=3, threads=2, images_per_pass=3),
        dict(cells_per_call=12, threads=1, images_per_pass=3),
        dict(cells_per_call=4, threads=2, images_per_pass=2),
    ]
    outs = [sample_bundle(bundle, n=3, steps=4, seed=7, cap=False, keep_float=True, **kw) for kw in runs]
    ref = outs[0].floats
    assert np.abs(ref).max() > 0.1  # images, not a constant
    for o in outs[1:]:
        assert np.abs(o.floats - ref).max() <= 1e-5
        assert np.array_equal(o.images, outs[0].images)
    other_seed = sample_bundle(bundle, n=3, steps=4, seed=8, cap=False, keep_float=True)
    assert np.abs(other_seed.floats - ref).max() > 0.1


def test_device_images_match_the_torch_sampler(tiny):
    from edgediff.bundle import read_manifest
    from edgediff.runtime.conditions import choose_snippets
    from edgediff.runtime.sampler import sample_bundle
    from edgediff.torch_sampler import sample_torch

    bundle, model, config = tiny
    n, steps, seed = 3, 5, 3
    dev = sample_bundle(bundle, n=n, steps=steps, seed=seed, cap=False, keep_float=True, cells_per_call=2)
    snippets = choose_snippets(bundle, read_manifest(bundle), n, seed, None, None)
    ref = sample_torch(model, config, n=n, steps=steps, seed=seed, snippets=snippets)
    assert np.abs(dev.floats - ref).max() <= 1e-3
    assert np.abs(ref).max() > 0.1


def test_bundle_sampler_plans_without_loading_and_reports_its_phases(tiny, tmp_path, monkeypatch):
    """plan() reads the manifest only; run() returns images with the figures benchmarks read (no patching) and
    writes nothing."""
    import edgediff.runtime.sampler as smp

    bundle, _, _ = tiny
    sampler = smp.BundleSampler(bundle, smp.SampleRequest(n=3, steps=4, seed=7, images_per_pass=2,
                                                          phase_peaks=True))
    real_create = smp.create_session
    monkeypatch.setattr(smp, "create_session", lambda *a, **k: pytest.fail("plan() loaded the model"))
    plan = sampler.plan()
    assert plan.images_per_pass == 2 and sampler.plan() is plan
    monkeypatch.setattr(smp, "create_session", real_create)
    monkeypatch.chdir(tmp_path)
    result = sampler.run()
    assert result.plan is plan and result.images.shape == (3, 16, 16, 3) and result.images.dtype == np.uint8
    ph = result.phases
    assert len(ph.step_s) == 2 * 4 and all(t >= 0 for t in ph.step_s)  # two passes of four steps
    assert 0 < ph.before_load_mb <= ph.load_peak_mb and 0 < ph.after_load_mb <= ph.load_peak_mb
    assert ph.load_s >= 0 and ph.sampling_s >= 0 and ph.sampling_peak_mb > 0
    assert result.peak_mb >= round(ph.load_peak_mb, 1) - 0.1
    assert set(ph.to_dict()) >= {"after_load_mb", "load_s", "step_s", "sampling_peak_mb", "peak_reset"}
    assert not list(tmp_path.iterdir())  # the runtime writes nothing
    with pytest.raises(smp.EdgediffError, match="--n 0"):
        smp.BundleSampler(bundle, smp.SampleRequest(n=0))


def test_snippet_choice_changes_the_condition(tiny):
    from edgediff.runtime.sampler import sample_bundle

    bundle, _, _ = tiny
    a = sample_bundle(bundle, n=2, steps=3, seed=0, cap=False, keep_float=True, snippet=1)
    b = sample_bundle(bundle, n=2, steps=3, seed=0, cap=False, keep_float=True, snippet=5)
    c = sample_bundle(bundle, n=2, steps=3, seed=0, cap=False, keep_float=True, interpolate="1,5,0.0")
    assert np.abs(a.floats - b.floats).max() > 1e-4
    assert np.abs(a.floats - c.floats).max() <= 1e-5  # alpha 0 is entry 1 itself


def test_refusal_comes_before_the_model_is_read(tiny, tmp_path):
    """A corrupt model would fail its checksum, yet a too-small budget is what gets reported: nothing was read."""
    import shutil

    bundle, _, _ = tiny
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "denoiser.onnx").write_bytes(b"not a model")
    r = _run(BLOCK_TORCH + "from edgediff.cli import main\nsys.argv = ['edgediff'] + sys.argv[1:]\nmain()\n",
             "sample", str(broken), "--n", "4", "--steps", "2", "--memory-budget", "20MiB",
             "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "--memory-budget 20.0 MiB is too small" in line and "pass --memory-budget" in line
    need = int(line.split("pass --memory-budget ")[1].split("MiB")[0])
    assert need > 20
    assert not (tmp_path / "x.png").exists()
    # at the named budget it is the corrupt file that stops it, i.e. that budget was accepted
    r2 = _run(BLOCK_TORCH + "from edgediff.cli import main\nsys.argv = ['edgediff'] + sys.argv[1:]\nmain()\n",
              "sample", str(broken), "--n", "4", "--steps", "2", "--memory-budget", f"{need}MiB",
              "--out", str(tmp_path / "x.png"))
    assert r2.returncode == 2 and "manifest says" in r2.stderr, r2.stderr


@pytest.mark.parametrize("which", ["tiny", "tiny_halo"])
def test_a_budget_at_the_floor_is_met(which, request, tmp_path):
    bundle, _, _ = request.getfixturevalue(which)
    code = (BLOCK_TORCH + "from edgediff.runtime.sampler import sample_bundle\n"
            "from edgediff.runtime.planner import BudgetError\n"
            "import json\n"
            "try:\n    sample_bundle(sys.argv[1], n=4, steps=3, memory_budget=1 << 20)\n"
            "except BudgetError as e:\n    floor = e.floor_mb\n"
            "r = sample_bundle(sys.argv[1], n=4, steps=3, memory_budget=int(floor * (1 << 20)))\n"
            "print(json.dumps({'floor': floor, 'peak': r.peak_mb, 'estimate': r.plan.estimate_mb}))\n")
    r = _run(code, str(bundle))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["peak"] <= res["floor"]
    assert res["estimate"] <= res["floor"]


def test_arena_cap_turns_into_a_clear_error(tiny):
    from edgediff.bundle import read_manifest
    from edgediff.errors import EdgediffError
    from edgediff.runtime.planner import plan_sampling
    from edgediff.runtime.sampler import onnx_eps_fn
    from edgediff.runtime.session import create_session
    from edgediff.runtime.profile import example_feeds

    bundle, _, _ = tiny
    m = read_manifest(bundle)
    plan = plan_sampling(m, m.memory_profile, n=128, now_mb=10, budget_mb=None, cells_per_call=512)
    plan.settings = plan.settings.with_(cap_mb=0.5)  # the arena's granularity is ~1 MiB: smaller caps round up
    session = create_session(bundle / "denoiser.onnx", plan.settings)
    f = example_feeds(session, 512)
    eps_fn = onnx_eps_fn(session, m, plan)
    with pytest.raises(EdgediffError, match="arena hit its cap"):
        eps_fn(f["patch"], f["global_content"], f["timestep"], f["position"], f["snippet"])


def test_profile_command_prints_a_valid_profile(tiny):
    from edgediff.bundle.validate import _profile

    bundle, _, _ = tiny
    r = _run(BLOCK_TORCH + "from edgediff.runtime.profile import main\nsys.exit(main(sys.argv[1:]))\n",
             str(bundle), "--modes", "lean", "--cells", "1,4")
    assert r.returncode == 0, r.stderr
    prof = _profile(json.loads(r.stdout))
    v = prof.variants["fp32"]
    assert prof.baseline_mb > 10 and v.resident_mb > 0
    assert set(v.activation_mb) == {"1", "4"} and v.activation_mb["4"] >= v.activation_mb["1"] * 0.9
    assert prof.settings["modes"]["lean"]["opt_level"] == "extended"


def test_small_cells_are_profiled_up_to_16_per_call(tiny):
    """The planner assumes no batching gain beyond the largest measured batch, so small cells (where batching
    pays) are measured at 8 and 16 too."""
    from edgediff.bundle import read_manifest

    bundle, _, _ = tiny
    assert read_manifest(bundle).patch_size <= 32
    assert set(read_manifest(bundle).memory_profile.variants["fp32"].ms_per_call) == {"1", "2", "4", "8", "16"}


def test_missing_default_bundle_names_the_fix():
    from edgediff.errors import EdgediffError
    from edgediff.bundle import DEFAULT_BUNDLE, resolve_bundle

    if (DEFAULT_BUNDLE / "manifest.json").is_file():
        assert resolve_bundle(None) == DEFAULT_BUNDLE
    else:
        with pytest.raises(EdgediffError, match="pass BUNDLE_DIR"):
            resolve_bundle(None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mmap_threshold_uses_the_mapped_libc_without_a_subprocess(monkeypatch):
    """The lever is set on every run: it must come from the libc already in the process, not from find_library
    (which runs ldconfig in a subprocess)."""
    import ctypes.util

    from edgediff.runtime import rss

    def no_lookup(name):
        raise AssertionError("find_library called")

    rss._mallopt.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", no_lookup)
    assert rss.set_mmap_threshold(64 * 1024) is True


def test_sampler_parses_the_manifest_once_even_without_a_profile(tiny, tmp_path, monkeypatch):
    """A bundle without a memory profile has its denoisers checksummed before they are profiled: on the manifest
    already read (open_bundle there once parsed manifest.json a second time and dropped the result)."""
    import shutil

    import edgediff.bundle.disk as disk
    import edgediff.runtime.profile as profile
    from edgediff.bundle import read_manifest
    from edgediff.runtime.sampler import BundleSampler, SampleRequest

    bundle = tmp_path / "no_profile"
    shutil.copytree(tiny[0], bundle)
    manifest = read_manifest(bundle)
    measured, manifest.memory_profile = manifest.memory_profile, None
    (bundle / "manifest.json").write_text(manifest.to_json())
    parsed, checked = [], []
    real_parse = disk.parse_manifest
    monkeypatch.setattr(disk, "parse_manifest", lambda raw: parsed.append(1) or real_parse(raw))
    monkeypatch.setattr(profile, "measure_profile", lambda *a, **k: checked.append(len(parsed)) or measured)
    BundleSampler(bundle, SampleRequest(n=1, steps=2)).plan()
    assert checked == [1] and len(parsed) == 1  # profiled once, after one parse; no second parse anywhere
    (bundle / "denoiser.onnx").write_bytes(b"swapped")
    with pytest.raises(disk.BundleError, match="denoiser.onnx"):  # the unprofiled files are still checksummed
        BundleSampler(bundle, SampleRequest(n=1, steps=2)).plan()
