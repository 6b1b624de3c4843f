"""Memory stays flat over a long run: the benchmark (benchmarks/longrun.py) with fewer images, in a fresh
interpreter, on a 128 px bundle (so one leaked image buffer per image, 192 KiB as float32, would show as a slope).

Both ways of sampling many images in one process are held to: after a warm-up, RSS grows by less than a third of
one float image per image (beyond, in batch mode, the uint8 images the result keeps by design), and the peak
(VmHWM) rises by less than 2 MiB over the run (allocator steps of ~0.5 MiB happen once or twice).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reliability_support import make_bundle

IMAGES, STEPS, SIZE = 30, 2, 128
FLOAT_IMAGE_MB = 3 * SIZE * SIZE * 4 / 2**20
MAX_SLOPE_MB = FLOAT_IMAGE_MB / 3
MAX_PEAK_RISE_MB = 2.0


@pytest.fixture(scope="module")
def longrun(tmp_path_factory):
    root = tmp_path_factory.mktemp("longrun")
    bundle = make_bundle(root / "bundle", image_size=SIZE, grid=2)
    out = root / "longrun.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.longrun", "--bundle", str(bundle), "--images",
                           str(IMAGES), "--steps", str(STEPS), "--json", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["calls", "batch"])
def test_no_memory_growth_per_image(longrun, mode):
    run = longrun["runs"][mode]
    assert len(run["rss_mb"]) == IMAGES
    slope = run["slope_beyond_output_mb_per_image"] if mode == "batch" else run["slope_mb_per_image"]
    assert slope < MAX_SLOPE_MB, run["rss_mb"]
    kept = run.get("output_mb_per_image", 0.0) * (IMAGES - 5)
    assert run["peak_change_after_warmup_mb"] < MAX_PEAK_RISE_MB + kept, run["peak_mb"]


def test_the_slope_would_see_a_leak():
    """The measure itself: a series leaking one float image per image fails the threshold, noise does not."""
    import numpy as np

    from benchmarks.longrun import growth

    rng = np.random.default_rng(0)
    flat = list(70 + rng.normal(0, 0.05, IMAGES))
    leaky = [v + i * FLOAT_IMAGE_MB for i, v in enumerate(flat)]
    assert growth(flat)["slope_mb_per_image"] < MAX_SLOPE_MB < growth(leaky)["slope_mb_per_image"]
