"""The trained bundles that ship inside the package, by short name (`edgediff sample emoji-128`).

One table, so `sample`, `info`, `eval` and the benchmarks agree on what a name means. The first entry is the default
(what a command without a bundle uses). A folder of the same name in the working directory wins over a shipped name:
a user's own bundle is never shadowed by ours.
"""

from __future__ import annotations

from pathlib import Path

from edgediff.errors import EdgediffError

PACKAGE = Path(__file__).resolve().parent
SHIPPED: dict[str, Path] = {
    "emoji-32": PACKAGE / "default_bundle",  # 32 px, 2×2 cells of 16 px, 4 px halo (docs/default-model.md)
    "emoji-128": PACKAGE / "shipped" / "emoji-128",  # 128 px, 8×8 cells of 16 px, 4 px halo (docs/scale.md)
}
DEFAULT_NAME = next(iter(SHIPPED))


def installed() -> dict[str, Path]:
    """The shipped bundles this installation actually holds (a source checkout without them holds none)."""
    return {name: path for name, path in SHIPPED.items() if (path / "manifest.json").is_file()}


def shipped_bundle(name: str) -> Path:
    """The folder of the shipped bundle `name`; an unknown or missing name is a one-line error listing the rest."""
    found = installed()
    if name not in found:
        have = ", ".join(found) or "none"
        what = "is not shipped in this version of edgediff" if name in SHIPPED else "is not a shipped model"
        raise EdgediffError(f"{name!r} {what} (shipped: {have}); pass a bundle folder written by 'edgediff export'")
    return found[name]


def expand(path: str | Path | None) -> Path | None:
    """`path` as a folder: a shipped model's name (with no folder of that name here) becomes its bundle folder;
    anything else is returned as given (None stays None: the caller's default)."""
    if path is not None and str(path) in SHIPPED and not Path(path).exists():
        return shipped_bundle(str(path))
    return None if path is None else Path(path)


def listing() -> str:
    """One line naming the shipped models, for `edgediff info`."""
    return "shipped models: " + ", ".join(
        f"{name}{' (the default)' if name == DEFAULT_NAME else ''}" for name in installed())
