"""Which source a path is, for `edgediff eval` and `edgediff audit`: a training run, a bundle or a folder of
generated images, and the real images each should be scored against.

One resolver decides, for both commands, so a folder cannot be a run to one and a bundle to the other; a path that
is neither fails in one line that names what to pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgediff.bundle import is_bundle
from edgediff.errors import EdgediffError

RUN, BUNDLE, SAMPLES = "run", "bundle", "samples"
SOURCES = "a RUN_DIR (from 'edgediff train') or a BUNDLE_DIR (from 'edgediff export')"


@dataclass(frozen=True)
class Source:
    """What eval and audit read: a run, a bundle or (audit --samples) a folder of generated images."""

    kind: str  # RUN, BUNDLE or SAMPLES
    path: Path

    def image_size(self) -> int:
        """The size the model generates (a run's latest checkpoint, a bundle's manifest); checked, not loaded."""
        if self.kind == RUN:
            from edgediff.checkpoint import latest_checkpoint

            found = latest_checkpoint(self.path)
            if found is None:
                raise EdgediffError(f"{self.path} has no checkpoint yet; train first with 'edgediff train'")
            return int(found[1]["model"]["image_size"])
        if self.kind == BUNDLE:
            from edgediff.bundle import read_manifest

            return int(read_manifest(self.path).image_size)
        raise EdgediffError(f"{self.path}: a folder of samples records no image size; pass --data")

    def recorded_data(self) -> str | None:
        """The data a run (run.json) or a bundle (manifest `training.data`) records it was trained on, or None."""
        from edgediff.data import data_spec

        try:
            if self.kind == BUNDLE:
                from edgediff.bundle import read_manifest

                data = read_manifest(self.path).training.get("data")
            elif self.kind == RUN:
                data = json.loads((self.path / "run.json").read_text())["train"]["data"]
            else:
                return None
        except (OSError, ValueError, KeyError, TypeError, EdgediffError):
            return None
        return data_spec(data) if isinstance(data, str) and data else None


def resolve_source(path: str | Path | None, alternatives: str = SOURCES) -> Source:
    """A bundle has manifest.json (and no checkpoints/); a run has checkpoints/ or run.json. `alternatives` is
    what the error asks for instead (audit adds --samples). None is the default bundle shipped in the package, as
    for `sample` and `info`: every command reads the same thing when no path is given."""
    if path is None:
        from edgediff.bundle import resolve_bundle

        return Source(BUNDLE, resolve_bundle(None))
    from edgediff.shipped import expand

    path = expand(path)
    if not path.exists():
        raise EdgediffError(f"{path}: no such folder; pass {alternatives}")
    if is_bundle(path):
        return Source(BUNDLE, path)
    if (path / "checkpoints").is_dir() or (path / "run.json").is_file():
        return Source(RUN, path)
    raise EdgediffError(f"{path} is neither a run (no checkpoints/) nor a bundle (no manifest.json); pass "
                        f"{alternatives}")


def _available(spec: str) -> bool:
    return spec == "emoji" or Path(spec).is_dir()


def resolve_data(source: Source, data: str | None, other_data: bool = False) -> str:
    """The real images to score `source` against: by default the data it was trained on. An explicit --data that
    differs from it is refused unless `other_data` (scoring against the wrong set gives plausible, wrong numbers);
    when the recorded folder is not on this machine, --data is taken as given."""
    from edgediff.data import data_spec

    recorded, target = source.recorded_data(), source.path
    if data is None:
        if recorded is None:
            raise EdgediffError(f"{target} does not record the data it was trained on; pass --data emoji or "
                                "--data FOLDER")
        if not _available(recorded):
            raise EdgediffError(f"{target} was trained on {recorded}, which is not here; pass --data FOLDER with "
                                "the same images")
        return recorded
    chosen = data_spec(data)
    if recorded is not None and chosen != recorded and _available(recorded) and not other_data:
        raise EdgediffError(f"--data {data} is not the data {target} was trained on ({recorded}); drop --data to "
                            "use that, or add --other-data to score against it anyway")
    return chosen
