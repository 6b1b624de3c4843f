"""A two-stage cascade on the device: a small base bundle draws each image's layout, this bundle redraws it at its
own size from part of the way down the noise schedule (SDEdit).

Why: a cell model of a large image sees the layout only through the pooled global content, and at 128 px that stays
readable through nearly all of training's noise levels, so the model learns to keep a layout but not to invent one
(docs/scale.md). A 32 px model invents layouts well; handing its image to the 128 px model at strength ~0.6 gives
whole pictures with 128 px detail, which is how cascaded diffusion (CDM, Imagen) splits the work.

Memory: the two stages run one after the other in this process and the base's session is gone before the second
loads, so the peak is the larger of the two plans. Both are planned, against the same budget, before either loads a
model: a budget that cannot hold both is refused at once with the smallest that can. Both stages take the same seed
and snippet choice, so with banks built from the same data (as the shipped ones are) each image keeps one subject.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgediff.bundle import read_manifest, resolve_bundle
from edgediff.errors import EdgediffError
from edgediff.images import read_image
from edgediff.runtime.planner import RERUN_SLACK_MB, BudgetError, Plan
from edgediff.runtime.rss import MIB
from edgediff.runtime.sampler import BundleSampler, SampleRequest, SampleResult

NO_BASE = "none"


@dataclass(frozen=True)
class Stage:
    """Where a cascade's start images come from: the base bundle (a shipped name or a folder) and the strength at
    which this bundle redraws them."""

    base: str | Path
    strength: float


@dataclass(frozen=True)
class Start:
    """Where a run's images start: noise (no stage, no picture), a base bundle's images (a cascade), or one
    picture (`--init`, read and fitted to the bundle's size) redrawn at `strength`."""

    stage: Stage | None = None
    picture: np.ndarray | None = None  # [1, H, W, 3] uint8
    strength: float = 1.0


def choose_start(bundle_dir: str | Path | None, init: Path | None = None, base: str | None = None,
                 strength: float | None = None) -> Start:
    """The start a run uses. `--init PICTURE` redraws that picture; else `--base` (a shipped name, a folder, or
    'none') or the bundle's manifest.sampling.base draws the start images; `--strength` overrides the manifest's.
    Refuses what cannot work before any model is read."""
    manifest = read_manifest(resolve_bundle(bundle_dir))
    recorded = manifest.sampling.get("base")
    if init is not None and base is not None:
        raise EdgediffError("--init and --base both give the start images: pass one of them")
    if strength is not None and not (0.0 < strength <= 1.0):
        raise EdgediffError(f"--strength {strength} must be above 0 and at most 1 (1 = draw from noise, 0.5 = "
                            "keep the start image's layout)")
    chosen = strength if strength is not None else (recorded or {}).get("strength")
    if init is not None:
        if chosen is None:
            raise EdgediffError("--init needs --strength (e.g. 0.6: the share of the steps that redraws the picture)")
        return Start(picture=read_image(init, manifest.image_size, flag="--init"), strength=chosen)
    if base is not None and base.strip().lower() == NO_BASE or base is None and recorded is None:
        if strength is not None and strength < 1.0:
            raise EdgediffError(f"--strength {strength:g} redraws start images: pass --init PICTURE or --base MODEL")
        return Start()
    if chosen is None:
        raise EdgediffError(f"--base {base} needs --strength (e.g. 0.6: the share of the steps this bundle redraws)")
    return Start(stage=Stage(recorded["model"] if base is None else base, chosen), strength=chosen)


class CascadeSampler:
    """`BundleSampler` with a base stage: same `plan()` / `run()` shape, writes nothing. `plan()` returns the plan
    of the final stage (what the CLI reports) after both have been planned; `run()` returns the final images, with
    `peak_mb` the whole process's peak over both stages."""

    def __init__(self, bundle_dir: str | Path | None, request: SampleRequest, stage: Stage, *,
                 log: Callable[[str], None] = lambda s: None, verbose: bool = False):
        self.stage = stage
        self.final = BundleSampler(bundle_dir, replace(request, strength=stage.strength), log=log, verbose=verbose)
        base_request = replace(request, guidance=None, cell_shift=None, eta=None, strength=1.0,  # the base's own
                               keep_float=False)
        self.base = BundleSampler(stage.base, base_request, log=lambda s: log(f"base {stage.base}: {s}"),
                                  verbose=verbose)
        self.log = log
        self.plans: tuple[Plan, Plan] | None = None

    def plan(self) -> Plan:
        """Plan both stages before any model is read; a budget either cannot meet names the larger floor."""
        if self.plans is None:
            plans, needs, refused, held = [], [], False, []
            for sampler in (self.base, self.final):
                log, sampler.log = sampler.log, lambda line, log=sampler.log: held.append((log, line))
                try:
                    plan = sampler.plan()
                    plans.append(plan)
                    needs.append(math.ceil(plan.floor_mb + RERUN_SLACK_MB))
                except BudgetError as e:
                    refused = True
                    needs.append(e.floor_mb)
                finally:
                    sampler.log = log
            if refused:
                req = self.final.request
                raise BudgetError(
                    f"--memory-budget {req.memory_budget / MIB:.1f} MiB is too small for this cascade and --n "
                    f"{req.n}: the base {self.stage.base} needs {needs[0]:.0f} MiB and this bundle {needs[1]:.0f} "
                    f"MiB (each stage's leanest plan; they run one after the other); pass --memory-budget "
                    f"{max(needs):.0f}MiB or more", float(max(needs)))
            for log, line in held:  # nothing is printed before both stages have a plan
                log(line)
            self.plans = (plans[0], plans[1])
        return self.plans[1]

    def run(self, on_step: Callable[[int, int], None] | None = None,
            on_images: Callable[[int, np.ndarray], None] | None = None) -> SampleResult:
        """The base's images, then this bundle's redraw of them; progress counts both stages' steps."""
        self.plan()
        first = self.base.request.steps_run * self.base.request.n
        total = first + self.final.request.steps_run * self.final.request.n
        base = self.base.run(on_step=_shifted(on_step, 0, first, total))
        self.log(f"base {self.stage.base}: done, peak RSS {base.peak_mb:.1f} MiB; redrawing at strength "
                 f"{self.stage.strength:g}")
        images = base.images
        del base  # its session is already closed; drop its buffers too before the second stage loads
        result = self.final.run(on_step=_shifted(on_step, first, total - first, total), on_images=on_images,
                                init=images)
        return result


def _shifted(on_step: Callable[[int, int], None] | None, offset: int, span: int, total: int):
    """A stage's on_step(done, stage_total), reported as overall progress over both stages."""
    if on_step is None:
        return None
    return lambda done, stage_total: on_step(offset + round(done * span / max(1, stage_total)), total)


def start_sampler(bundle_dir: str | Path | None, request: SampleRequest, start: Start = Start(), *,
                  log: Callable[[str], None] = lambda s: None, verbose: bool = False):
    """(sampler, run): the sampler a start needs (a cascade for a base, else one bundle) and its `run(on_step,
    on_images)` with the start images bound. One home for the choice: `sample` and the benchmarks both use it."""
    request = replace(request, strength=start.strength)
    if start.stage is not None:
        sampler = CascadeSampler(bundle_dir, request, start.stage, log=log, verbose=verbose)
        return sampler, sampler.run
    sampler = BundleSampler(bundle_dir, request, log=log, verbose=verbose)
    return sampler, lambda on_step=None, on_images=None: sampler.run(on_step, on_images, init=start.picture)


def sample_as_recorded(bundle_dir: str | Path | None, log: Callable[[str], None] = lambda s: None,
                       base: str | None = None, **options) -> SampleResult:
    """Sample a bundle the way `edgediff sample BUNDLE` does without start flags: through its recorded cascade, if
    any; `base` swaps in another base at the recorded strength, as `sample --base` does. Writes nothing (the
    benchmarks' one call)."""
    start = choose_start(bundle_dir, base=None if base is None else str(base))
    _, run = start_sampler(bundle_dir, SampleRequest(**options), start, log=log)
    return run()
