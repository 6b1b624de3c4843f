"""The device side loads nothing of the training side: `import edgediff.runtime.sampler` in a fresh interpreter
must leave every torch-side module (edgediff.models*, edgediff.train*, torch) out of sys.modules.

Another test runs the sampler with torch made unimportable; that proves it *can* run without torch, not that it
does not pull in training code whenever torch happens to be installed (as it is wherever this suite runs)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("edgediff.models", "edgediff.train", "torch")


def _modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _training_side(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") or m.startswith(f + "_") for f in FORBIDDEN)]


def test_device_sampler_imports_nothing_of_the_training_side():
    modules = _modules_after("import edgediff.runtime.sampler")
    assert "edgediff.runtime.sampler" in modules and "edgediff.model_config" in modules  # the check saw the import
    assert _training_side(modules) == []


def test_sampling_to_files_imports_nothing_of_the_training_side():
    """What `edgediff sample` and the benchmarks run (the sampler plus writing the images) stays device-side too."""
    modules = _modules_after("import edgediff.runtime.sample_files, edgediff.progress, edgediff.images")
    assert "edgediff.runtime.sample_files" in modules
    assert _training_side(modules) == []


def test_the_forbidden_list_would_catch_a_training_import():
    """The filter itself: the prefixes match what a training import brings in (else the test above proves nothing)."""
    assert _training_side(["edgediff.models", "edgediff.models.unet", "edgediff.train", "edgediff.train_config",
                           "torch", "torch.nn", "edgediff.model_config", "torchvision_x"]) == [
        "edgediff.models", "edgediff.models.unet", "edgediff.train", "edgediff.train_config", "torch", "torch.nn"]
