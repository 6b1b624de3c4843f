"""Checkpoints as safetensors + JSON, written so that a kill at any instant leaves an intact one behind.

Layout inside a run directory:
    checkpoints/ckpt-000200.safetensors   model.*, ema.*, opt.* tensors
    checkpoints/ckpt-000200.json          step, configs, optimizer hyper-parameters, loss history
    checkpoints/latest.json               {"name": "ckpt-000200", "step": 200, "checkpoints": {name: {"step",
                                          "sha256": {file: hex}}}}: switched atomically after both files exist

The pointer carries the sha256 of every file of every kept checkpoint, written in the same atomic rename that makes
a checkpoint current: a flipped byte or a truncated file is caught before any tensor is used, and the error names
the newest checkpoint that still verifies (the pointer knows its hashes too). Runs written before the hashes existed
load unchecked. Nothing here unpickles: safetensors holds only tensors and JSON holds only data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgediff.errors import EdgediffError
from edgediff.files import atomic_write_bytes, sha256_bytes, sha256_file

KEEP_LAST = 2


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict,
    extra: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Write ckpt-<step> (tensors, then JSON), then point latest.json at it, then prune old ones. `extra` modules
    (e.g. the --align projector, trained but never exported) are stored under their own prefix."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    for stale in ckdir.glob(".*.tmp"):  # temp files of writes a kill interrupted (only rank 0 ever writes here)
        stale.unlink(missing_ok=True)
    name = f"ckpt-{step:06d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for prefix, module in (extra or {}).items():
        tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    from safetensors.torch import save

    tensor_bytes = save(tensors, metadata={"step": str(step)})
    json_bytes = json.dumps(dict(meta, step=step, optimizer=opt_meta), indent=1).encode()
    atomic_write_bytes(ckdir / f"{name}.safetensors", tensor_bytes)
    atomic_write_bytes(ckdir / f"{name}.json", json_bytes)
    names = sorted(p.stem for p in ckdir.glob("ckpt-*.json"))
    kept = names[-KEEP_LAST:]
    try:  # the hashes of the checkpoints kept from before; an unreadable old pointer is simply replaced
        known = _read_pointer(ckdir).get("checkpoints", {}) if (ckdir / "latest.json").exists() else {}
    except EdgediffError:
        known = {}
    entries = {k: known[k] for k in kept if isinstance(known.get(k), dict) and k != name}
    entries[name] = {"step": step, "sha256": {f"{name}.safetensors": sha256_bytes(tensor_bytes),
                                              f"{name}.json": sha256_bytes(json_bytes)}}
    pointer = {"name": name, "step": step, "checkpoints": entries}
    atomic_write_bytes(ckdir / "latest.json", json.dumps(pointer, indent=1).encode())
    for old in names[:-KEEP_LAST]:
        (ckdir / f"{old}.json").unlink(missing_ok=True)
        (ckdir / f"{old}.safetensors").unlink(missing_ok=True)
    return ckdir / f"{name}.safetensors"


def _read_pointer(ckdir: Path) -> dict:
    """latest.json as a dict with a safe `name`; a one-line error for anything else."""
    pointer = ckdir / "latest.json"
    try:
        body = json.loads(pointer.read_text())
        name = body["name"]
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ValueError(name)
        if not isinstance(body.get("checkpoints", {}), dict):
            raise ValueError("checkpoints")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgediffError(f"checkpoint in {ckdir} is unreadable ({e}); delete {pointer} to start over") from e
    return body


def _damage(ckdir: Path, name: str, entry: dict | None) -> str | None:
    """Why checkpoint `name` cannot be used (missing file, sha256 mismatch), or None when it verifies. Without
    recorded hashes (runs older than them) the files only have to exist."""
    hashes = entry.get("sha256", {}) if isinstance(entry, dict) else {}
    for suffix in (".safetensors", ".json"):
        path = ckdir / f"{name}{suffix}"
        if not path.is_file():
            return f"{path} is missing"
        want = hashes.get(path.name)
        if want is not None and sha256_file(path) != want:
            return f"{path} is damaged (its sha256 differs from the one recorded in latest.json)"
    return None


def _newest_intact(ckdir: Path, pointer: dict, exclude: str) -> tuple[str, int] | None:
    """(name, step) of the newest other checkpoint whose files verify against the pointer's hashes."""
    entries = pointer.get("checkpoints", {})
    names = {p.stem for p in ckdir.glob("ckpt-*.json")} | set(entries)
    for name in sorted(names - {exclude}, reverse=True):
        if not name.startswith("ckpt-") or "/" in name or _damage(ckdir, name, entries.get(name)) is not None:
            continue
        try:
            return name, int(json.loads((ckdir / f"{name}.json").read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def fallback_hint(ckdir: Path, bad: str, pointer: dict | None = None) -> str:
    """What to do when checkpoint `bad` cannot be used: the newest intact one and how to fall back to it."""
    found = _newest_intact(ckdir, pointer or {}, exclude=bad)
    if found is None:
        return f"no intact checkpoint is left in {ckdir}: delete it to start over"
    name, step = found
    return (f"the newest intact checkpoint is {name} (step {step}): delete {ckdir / bad}.safetensors and "
            f"{ckdir / bad}.json to continue from it")


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The checkpoint latest.json names, verified against its recorded sha256, as (tensor file, JSON meta); None
    when the run has none yet. When both files of the named checkpoint were deleted (what the damage message
    advises), the newest intact older one is used."""
    ckdir = Path(run_dir) / "checkpoints"
    if not (ckdir / "latest.json").exists():
        return None
    pointer = _read_pointer(ckdir)
    name = pointer["name"]
    entries = pointer.get("checkpoints", {})
    if not (ckdir / f"{name}.json").exists() and not (ckdir / f"{name}.safetensors").exists():
        older = _newest_intact(ckdir, pointer, exclude=name)
        if older is not None:
            name = older[0]
    problem = _damage(ckdir, name, entries.get(name))
    if problem is not None:
        raise EdgediffError(f"{problem}; {fallback_hint(ckdir, name, pointer)}")
    try:
        meta = json.loads((ckdir / f"{name}.json").read_text())
    except (OSError, ValueError) as e:
        raise EdgediffError(f"{ckdir / name}.json is unreadable ({e}); {fallback_hint(ckdir, name, pointer)}") from e
    if not isinstance(meta, dict):
        raise EdgediffError(f"{ckdir / name}.json is not a checkpoint record; {fallback_hint(ckdir, name, pointer)}")
    return ckdir / f"{name}.safetensors", meta


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        path = Path(path)
        raise EdgediffError(f"{path} is not a valid safetensors checkpoint ({e}); "
                            f"{fallback_hint(path.parent, path.stem)}") from e


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def restore(tensor_path: Path, meta: dict, model, ema, opt, extra: dict | None = None) -> int:
    """Load model, EMA, `extra` modules and optimizer state in place; returns the step to continue from."""
    tensors = load_tensors(tensor_path)
    model.load_state_dict(split_prefix(tensors, "model"))
    ema.load_state_dict(split_prefix(tensors, "ema"))
    for prefix, module in (extra or {}).items():
        module.load_state_dict(split_prefix(tensors, prefix))
    if opt is not None:
        _unflatten_optimizer(opt, tensors, meta["optimizer"])
    return int(meta["step"])


def load_ema_model(run_dir: Path):
    """(EMA model in eval mode, its ModelConfig, checkpoint meta) from a run's latest checkpoint."""
    from edgediff.models import ModelConfig, build_model

    found = latest_checkpoint(run_dir)
    if found is None:
        raise EdgediffError(f"{run_dir} has no checkpoint yet; train first with 'edgediff train --out {run_dir}'")
    tensor_path, meta = found
    config = ModelConfig.from_dict(meta["model"])
    model = build_model(config)
    weights = split_prefix(load_tensors(tensor_path), "ema")
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise EdgediffError(f"{tensor_path} holds non-finite EMA weights (ema.{bad}); a model with NaN or inf "
                            f"would export and sample garbage: {fallback_hint(tensor_path.parent, tensor_path.stem)}")
    model.load_state_dict(weights)
    model.eval()
    return model, config, meta


__all__ = ["save_checkpoint", "latest_checkpoint", "restore", "load_ema_model", "save_file"]
