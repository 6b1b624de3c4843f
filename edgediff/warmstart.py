"""Warm start: begin a new run from another model's weights (`edgediff train --init-from PATH`).

PATH is a shipped model's name, a bundle (its fp32 ONNX denoiser: the weights a user actually has, since runs stay
on the training box) or a run folder (its latest checkpoint's EMA weights). Weights are matched by name and shape. The planned mismatches are
input channels of the first conv: a halo model's validity mask (edgediff.cells) and a `position_map` model's
"you are here" channel. A source without them has its `conv_in` widened with zero weights for those channels, so
the warm-started network computes exactly what the old one did (on interior cells) until training teaches it to
use them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgediff.errors import EdgediffError
from edgediff.model_config import ModelConfig

FIRST_CONV = "conv_in.weight"


def cast_weights(graph, init: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights a bundle stores as fp16 (`export --fp16-weights`: an fp16 initializer read through a Cast to
    float32 whose output keeps the torch name), as float32 under that name: without them a shipped fp16 bundle such
    as emoji-128 could not be warm-started from."""
    return {node.output[0]: init[node.input[0]].astype(np.float32) for node in graph.node
            if node.op_type == "Cast" and node.input[0] in init}


def onnx_weights(onnx_path: Path, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """State-dict-named arrays from an exported denoiser. Named initializers keep their torch names; GroupNorm's
    affine pair does not (it exports as InstanceNormalization → Reshape → Mul(weight) → Add(bias) with anonymous
    constants), so those are read in graph order, which is the order the model's GroupNorms run in."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    init.update(cast_weights(graph, init))
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_op(name: str, op: str):
        return next((n for n in consumers.get(name, []) if n.op_type == op), None)

    affine = []
    for node in graph.node:
        if node.op_type == "InstanceNormalization":
            reshape = next_op(node.output[0], "Reshape")
            mul = reshape and next_op(reshape.output[0], "Mul")
            add = mul and next_op(mul.output[0], "Add")
            if add is None:
                raise EdgediffError(f"{onnx_path.name}: a normalisation without its scale and shift; re-export it")
            affine.append((init[mul.input[1]].reshape(-1), init[add.input[1]].reshape(-1)))
    norms = [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.GroupNorm)]
    if len(norms) != len(affine):
        raise EdgediffError(f"{onnx_path.name} has {len(affine)} normalisations, this model {len(norms)}; use the "
                            "same --backbone, --dim and --mults")
    out = dict(init)
    for name, (w, b) in zip(norms, affine):
        out[f"{name}.weight"], out[f"{name}.bias"] = w, b
    return out


def source_weights(path: str | Path, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Named float arrays from a bundle's fp32 denoiser (checked against its sha256 first), a shipped model's (by its
    name, e.g. emoji-128: how a shipped model is fine-tuned or trained on when its run folder is gone) or a run's
    EMA weights."""
    from edgediff.bundle import is_bundle, read_manifest, resolve, verify_files
    from edgediff.shipped import expand

    path = expand(path)

    if is_bundle(path):

        manifest = read_manifest(path)
        if "denoiser_fp32" not in manifest.files:
            raise EdgediffError(f"--init-from {path}: this bundle ships only its int8 denoiser (--int8-only); start "
                                "from its training run folder or from a bundle with an fp32 file")
        verify_files(path, manifest, roles=("denoiser_fp32",))
        return onnx_weights(resolve(path, manifest.files["denoiser_fp32"]), model)
    if path.is_dir():
        from edgediff.checkpoint import load_ema_model

        src, _, _ = load_ema_model(path)
        return {k: v.detach().numpy() for k, v in src.state_dict().items()}
    raise EdgediffError(f"--init-from {path} is neither a bundle (manifest.json) nor a run folder; pass one of them")


def widen_first_conv(weight: np.ndarray, config: ModelConfig, target_in: int) -> np.ndarray:
    """A `conv_in` [out, k_in, k, k] widened to `target_in` input channels with zero weights for the channels the
    source lacks: the halo's validity mask (right after the C channels of x_t) and the position map (last), in the
    order the UNet concatenates [patch incl. mask, global content, position map]. A source with one extra channel
    is taken to have the mask (a halo model) when the target wants both."""
    c, k_in = config.channels, weight.shape[1]
    add_mask = bool(config.halo) and (k_in == 2 * c)
    add_map = config.position_map and k_in + int(add_mask) < target_in
    if k_in + int(add_mask) + int(add_map) != target_in:
        return weight  # not a planned widening: the shape check in load_init_weights names it
    zeros = np.zeros((weight.shape[0], 1, *weight.shape[2:]), dtype=weight.dtype)
    parts = [weight[:, :c], *([zeros] if add_mask else []), weight[:, c:], *([zeros] if add_map else [])]
    return np.concatenate(parts, axis=1)


def load_init_weights(model: torch.nn.Module, path: str | Path, config: ModelConfig) -> int:
    """Copy every matching tensor of `path` into `model`; returns how many were copied. Refuses (one line) when
    fewer than all of the model's tensors can be filled: a half-initialised network is worse than a fresh one."""
    src = source_weights(path, model)
    state = model.state_dict()
    if FIRST_CONV in src and FIRST_CONV in state and src[FIRST_CONV].shape[1] < state[FIRST_CONV].shape[1]:
        src[FIRST_CONV] = widen_first_conv(src[FIRST_CONV], config, state[FIRST_CONV].shape[1])
    missing = [k for k, v in state.items() if k not in src or tuple(src[k].shape) != tuple(v.shape)]
    if missing:
        raise EdgediffError(f"--init-from {path}: {len(missing)} of {len(state)} tensors do not match this model "
                            f"(first: {missing[0]}); use the same --backbone, --dim, --mults, grid and snippet width")
    model.load_state_dict({k: torch.from_numpy(np.array(src[k])) for k in state})
    return len(state)
