"""Checkpoints as safetensors + JSON, written so that a kill at any instant leaves an intact one behind.

Layout inside a run directory:
    checkpoints/ckpt-000200.safetensors   model.*, ema.*, opt.* tensors
    checkpoints/ckpt-000200.json          step, configs, optimizer hyper-parameters, loss history
    checkpoints/latest.json               {"name": "ckpt-000200"}: switched atomically after both files exist

Nothing here unpickles: safetensors holds only tensors and JSON holds only data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgediff.errors import EdgediffError
from edgediff.images import atomic_write_bytes

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

    atomic_write_bytes(ckdir / f"{name}.safetensors", save(tensors, metadata={"step": str(step)}))
    body = dict(meta, step=step, optimizer=opt_meta)
    atomic_write_bytes(ckdir / f"{name}.json", json.dumps(body, indent=1).encode())
    atomic_write_bytes(ckdir / "latest.json", json.dumps({"name": name, "step": step}).encode())
    for old in sorted(ckdir.glob("ckpt-*.json"))[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return ckdir / f"{name}.safetensors"


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The checkpoint latest.json names, as (tensor file, JSON meta); None when the run has none yet."""
    ckdir = Path(run_dir) / "checkpoints"
    pointer = ckdir / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["name"]
        if "/" in name or name.startswith("."):
            raise ValueError(name)
        meta = json.loads((ckdir / f"{name}.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgediffError(f"checkpoint in {ckdir} is unreadable ({e}); delete {pointer} to start over") from e
    tensor_path = ckdir / f"{name}.safetensors"
    if not tensor_path.exists():
        raise EdgediffError(f"{tensor_path} is missing; delete {pointer} to start over")
    return tensor_path, meta


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise EdgediffError(f"{path} is not a valid safetensors checkpoint ({e}); resume from an older run") from e


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
    model.load_state_dict(split_prefix(load_tensors(tensor_path), "ema"))
    model.eval()
    return model, config, meta


def save_file_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors file written atomically (for banks and other tensor side files)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors))


__all__ = ["save_checkpoint", "latest_checkpoint", "restore", "load_ema_model", "save_file", "save_file_atomic"]
