"""The int8 ship gate (edgediff/int8_gate.py) and what it changes: the planner's preference order and `info`."""

from __future__ import annotations

import copy
from dataclasses import replace

from edgediff.bundle import Quality
from edgediff.int8_gate import int8_failures, int8_ships, verdict
from tests.test_planner import manifest, plan, profile

GOOD = {
    "rel_error_by_band": {"0-49": 0.30, "50-99": 0.06, "100-399": 0.02, "400-699": 0.01, "700-999": 0.01},
    "fd_delta": {"fd_lite0": {"fp32": 100.0, "int8": 101.0, "rel": 0.01},
                 "fd_independent": {"fp32": 80.0, "int8": 79.0, "rel": -0.0125}},
    "psnr_vs_fp32_db": 31.2,
}


def bad(**change) -> dict:
    q = copy.deepcopy(GOOD)
    for path, value in change.items():
        *keys, last = path.split("__")
        d = q
        for k in keys:
            d = d[k]
        if value is None:
            del d[last]
        else:
            d[last] = value
    return q


def test_measured_int8_within_every_threshold_ships():
    assert int8_failures(GOOD) == [] and int8_ships(GOOD)
    assert "yes" in verdict(GOOD)


def test_each_threshold_refuses_on_its_own_and_says_which():
    # t < 100 is excluded on purpose: there ε is nearly unobservable (30% above is fine)
    cases = {
        "ε error 5.5% at t 100-399": bad(**{"rel_error_by_band__100-399": 0.055}),
        "fd_independent +3.5%": bad(fd_delta__fd_independent__rel=0.035),
        "PSNR vs fp32 29.9 dB": bad(psnr_vs_fp32_db=29.9),
        "no fd_independent change measured": bad(fd_delta__fd_independent=None),
        "no PSNR against fp32 images": bad(psnr_vs_fp32_db=None),
    }
    for reason, q in cases.items():
        fails = int8_failures(q)
        assert not int8_ships(q) and any(reason in f for f in fails), (reason, fails)
        assert reason in verdict(q) and "\n" not in verdict(q)
    assert int8_failures(None) == ["no int8 measurements in the manifest"]
    assert int8_failures({**GOOD, "rel_error_by_band": {"late": 0.01}}) == ["no ε error per timestep band"]


def test_the_planner_runs_int8_first_only_when_it_ships():
    p = profile(int8=True)
    shipped = replace(manifest(int8=True), quality=Quality(int8=GOOD))
    refused = replace(manifest(int8=True), quality=Quality(int8=bad(psnr_vs_fp32_db=25.0)))
    assert plan(400.0, m=shipped, p=p).variant == "int8"
    assert plan(None, m=shipped, p=p).variant == "int8"
    assert plan(400.0, m=refused, p=p).variant == "fp32"
    assert plan(400.0, m=shipped, p=p, precision="fp32").variant == "fp32"  # a pin still wins
