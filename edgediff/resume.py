"""What `train --resume` may continue, and what it must refuse.

The docs promise an exact resume: the same batches, the same losses as one long run. That holds only when nothing
that shapes training changed, so every recorded setting is compared with the new command line before anything is
loaded or rewritten. Settings that only say how long, where or how often to save (RESUME_FREE) may change freely;
optimisation settings may change only behind an explicit `--override NAME`, which run.json records with the step it
took effect; the data, the geometry and the network (FIXED) never change under a run: that is a new run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgediff.checkpoint import latest_checkpoint
from edgediff.data import data_spec
from edgediff.errors import EdgediffError

if TYPE_CHECKING:
    from edgediff.train import TrainConfig

# How long to train, where, on what device and how often to save or preview: no effect on the weights at a step.
RESUME_FREE = frozenset({"steps", "out", "device", "checkpoint_every", "sample_every", "init_from", "overrides"})
# The data, the bank and the network: changing any of them is another run, never an override.
FIXED = frozenset({"data", "image_size", "grid", "halo", "backbone", "model", "memory", "features", "snippet_mode"})


@dataclass(frozen=True)
class ResumePoint:
    """Where a resume continues: the checkpoint (None before the first one) and the run's recorded run.json."""

    checkpoint: tuple[Path, dict] | None
    recorded: dict

    @property
    def step(self) -> int:
        return int(self.checkpoint[1]["step"]) if self.checkpoint is not None else 0


def flag(key: str) -> str:
    """The `edgediff train` flag of a TrainConfig field (or of a `model.` width)."""
    key = key.removeprefix("model.")
    return "--no-memory" if key == "memory" else "--" + key.replace("_", "-")


def _shown(key: str, value: object) -> str:
    if key == "memory":
        return "off" if value is False else "on"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def changed_settings(recorded: dict, now: dict) -> list[tuple[str, object, object]]:
    """(field, recorded value, new value) for each setting the new command changes; model widths as `model.dim`.
    Fields an older run.json lacks are not compared (that run was trained with their defaults)."""
    diffs = []
    for key, new in now.items():
        if key in RESUME_FREE or key not in recorded:
            continue
        was = recorded[key]
        if key == "data" and isinstance(was, str):
            was = data_spec(was)
        if key == "model" and isinstance(was, dict) and isinstance(new, dict):
            diffs += [(f"model.{k}", was[k], new[k]) for k in sorted(set(was) & set(new))
                      if _shown(k, was[k]) != _shown(k, new[k])]
            continue
        if was != new:
            diffs.append((key, was, new))
    return diffs


def _overridable(cfg_fields: dict) -> list[str]:
    return sorted(k for k in cfg_fields if k not in FIXED and k not in RESUME_FREE)


def apply_overrides(cfg: "TrainConfig", recorded: dict, overrides: tuple[str, ...], step: int) -> "TrainConfig":
    """`cfg` with its changes from the run's `recorded` settings either refused (one line naming the flag, the
    recorded value and the new one) or, when named in `overrides`, recorded in `cfg.overrides` from `step` on."""
    now = asdict(cfg)
    allowed = _overridable(now)
    wanted = {o.strip().lstrip("-").replace("-", "_") for o in overrides}
    for name in sorted(wanted - set(allowed)):
        raise EdgediffError(f"--override {name}: not a setting a resume may change; it may change "
                            f"{', '.join(flag(k)[2:] for k in allowed)}")
    taken = []
    for key, was, new in changed_settings(recorded, now):
        shown = f"this run was trained with {flag(key)} {_shown(key, was)}, not {_shown(key, new)}"
        if key.startswith("model.") or key in FIXED:
            raise EdgediffError(f"--resume: {shown}; resume with {flag(key)} {_shown(key, was)} or start a new run "
                                "with a new --out")
        if key not in wanted:
            raise EdgediffError(f"--resume: {shown}; resume with {flag(key)} {_shown(key, was)}, or add --override "
                                f"{flag(key)[2:]} to change it from step {step} on (recorded in run.json)")
        taken.append({"step": step, "flag": flag(key), "was": was, "now": new})
    return replace(cfg, overrides=list(recorded.get("overrides", [])) + taken)


def _read_recorded(out: Path) -> dict:
    if not (out / "run.json").is_file():
        raise EdgediffError(f"--resume: {out} holds no run (no run.json); drop --resume to start a new run there "
                            "or pass the --out of an existing run")
    try:
        body = json.loads((out / "run.json").read_text())
        return {**body["train"], "data_sha256": body.get("data", {}).get("sha256")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EdgediffError(f"--resume: {out}/run.json is unreadable ({e}); start a new run with a new --out") from e


def check_resume(cfg: "TrainConfig", resume: bool, overrides: tuple[str, ...] = ()) -> tuple["TrainConfig",
                                                                                             ResumePoint | None]:
    """(the config to train with, where to continue). Refuses before any data or bank is loaded: a resume of a
    folder with no run, a run without --resume, any changed setting not overridden, and a --steps below the
    steps done."""
    out = Path(cfg.out)
    found = latest_checkpoint(out) if out.exists() else None
    if not resume:
        if found is not None:
            raise EdgediffError(f"{out} already holds a run; add --resume to continue it or pick a new --out")
        if overrides:
            raise EdgediffError("--override only applies to --resume; a new run takes the flags as given")
        return cfg, None
    point = ResumePoint(found, _read_recorded(out))
    cfg = apply_overrides(cfg, point.recorded, overrides, point.step)
    if cfg.steps < point.step:
        raise EdgediffError(f"--steps {cfg.steps} is fewer than the {point.step} steps this run has done; --steps is "
                            f"the new total: pass more than {point.step}")
    return cfg, point


def check_same_images(point: ResumePoint | None, data: str, sha256: str, count: int) -> None:
    """A resume trains on the images the run started with: a folder whose content changed (images added, removed
    or edited) would silently rebuild the bank with a new PCA basis. Runs recorded before the hash was kept pass."""
    recorded = point.recorded.get("data_sha256") if point is not None else None
    if recorded and recorded != sha256:
        raise EdgediffError(f"--resume: the images in {data} changed since this run started (now {count} images); "
                            "restore them, or start a new run with a new --out (--init-from this run to keep its "
                            "weights)")


def interrupted_message(out: Path) -> str:
    """The line Ctrl-C prints: the checkpoint a later --resume continues from (nothing half-written survives)."""
    try:
        found = latest_checkpoint(Path(out)) if (Path(out) / "checkpoints").exists() else None
    except EdgediffError:
        found = None
    if found is None:
        return f"interrupted before the first checkpoint: nothing kept in {out}"
    return f"interrupted: kept {found[0]} (step {found[1]['step']}); continue with --resume"
