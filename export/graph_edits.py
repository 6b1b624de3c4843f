"""ONNX graph edits behind the diffusion-aware int8 levers: found from the graph's structure, never from node names.

- `split_concat_convs`: a convolution over a channel concatenation (the UNet's skip connections) is rewritten as
  one convolution per concatenated tensor, summed: conv(cat(a, b)) = conv_a(a) + conv_b(b). Exactly equal in
  fp32, but each part now gets its own input scale when quantised (Q-Diffusion's split-shortcut quantisation):
  one shared scale over a decoder feature map and an encoder skip of very different range wastes most of the
  8 bits on the smaller one. The concatenation's other consumers (the normalisation) are returned, so the
  caller can keep them in float instead of quantising the concatenation as a whole.
- `io_convs` / `condition_nodes`: the first and last convolutions (raw pixels in, ε out: the layers whose error is
  not averaged by any later layer) and the condition path (timestep, position and snippet MLPs: nodes that do not
  depend on any spatial input), the candidates to keep in fp32.
- `weight_only_int8`: every Conv/Gemm weight stored as int8 per output channel + a DequantizeLinear: a smaller
  file and smaller resident weights, activations stay fp32.
- `fp16_storage`: every large float initializer stored as fp16 + a Cast back to fp32: half the file, and the same
  fp32 graph once onnxruntime's constant folding (every session mode's optimisation level) has cast the weights
  at load. What a shipped bundle uses to fit the package's size limit without touching how it computes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm")


def _producers(graph) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict[str, list[onnx.NodeProto]]:
    out = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            out[i].append(n)
    return out


def _channels(model: onnx.ModelProto) -> dict[str, int]:
    """Channel count (dim 1) of every tensor shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            out[v.name] = int(dims[1].dim_value)
    return out


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def split_concat_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite every group-1 Conv fed by a channel Concat as per-input Convs + Add (see module docstring).
    Returns the new model and the names of the Concats' other consumers (e.g. the norm's Reshape) and their
    direct successors, to keep in float."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    cons, chans = _consumers(g), _channels(model)
    concats = {n.output[0]: n for n in g.node if n.op_type == "Concat" and _attr(n, "axis") in (1, -3)}
    keep_float: list[str] = []
    new_nodes = []
    for node in g.node:
        cat = concats.get(node.input[0]) if node.op_type == "Conv" and node.input else None
        if cat is None or _attr(node, "group", 1) != 1 or node.input[1] not in inits \
                or any(i not in chans for i in cat.input) or len(set(cat.input)) != len(cat.input):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        bias = node.input[2] if len(node.input) > 2 else ""
        parts, off = [], 0
        for k, src in enumerate(cat.input):
            c = chans[src]
            wname = f"{node.input[1]}__split{k}"
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, off : off + c]), wname))
            off += c
            out = f"{node.output[0]}__split{k}"
            ins = [src, wname] + ([bias] if k == 0 and bias else [])
            new_nodes.append(helper.make_node("Conv", ins, [out], name=f"{node.name}__split{k}",
                                              **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
            parts.append(out)
        acc = parts[0]
        for k, p in enumerate(parts[1:], 1):
            dst = node.output[0] if k == len(parts) - 1 else f"{node.output[0]}__sum{k}"
            new_nodes.append(helper.make_node("Add", [acc, p], [dst], name=f"{node.name}__sum{k}"))
            acc = dst
        for other in cons[cat.output[0]]:
            if other is not node:
                keep_float.append(other.name)
                keep_float += [n.name for o in other.output for n in cons[o]]
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model, sorted(set(keep_float))


def _reach(start: set[str], graph, forward: bool) -> set[str]:
    """Tensors reachable from `start` following the graph forward (or backward)."""
    prod, cons = _producers(graph), _consumers(graph)
    seen, stack = set(start), list(start)
    while stack:
        t = stack.pop()
        nodes = cons[t] if forward else ([prod[t]] if t in prod else [])
        for n in nodes:
            for nxt in (n.output if forward else n.input):
                if nxt and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
    return seen


def io_convs(model: onnx.ModelProto) -> list[str]:
    """The convolutions with no other convolution before them (the first) or after them (the last)."""
    g = model.graph
    convs = [n for n in g.node if n.op_type in ("Conv", "ConvTranspose")]
    conv_outs = {o for n in convs for o in n.output}
    first = [n.name for n in convs if not (_reach({n.input[0]}, g, forward=False) & conv_outs)]
    conv_ins = {n.input[0] for n in convs}
    last = [n.name for n in convs if not (_reach(set(n.output), g, forward=True) & conv_ins)]
    return sorted(set(first + last))


def condition_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose inputs depend on no spatial (4-d) graph input: the timestep/position/snippet embedding MLPs."""
    g = model.graph
    spatial = {i.name for i in g.input if len(i.type.tensor_type.shape.dim) == 4}
    tainted = _reach(spatial, g, forward=True)
    return [n.name for n in g.node if not any(i in tainted for i in n.input)]


def weight_only_int8(model: onnx.ModelProto, min_size: int = 256) -> onnx.ModelProto:
    """Every Conv/ConvTranspose/Gemm weight initializer of ≥ `min_size` values → int8 (symmetric, per output
    channel) + DequantizeLinear; activations stay fp32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    dq_nodes, drop = [], set()
    for node in g.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        name = node.input[1]
        if name in drop:  # a weight shared by several nodes is dequantised once
            node.input[1] = f"{name}__dq"
            continue
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        if w.size < min_size:
            continue
        axis = 1 if node.op_type == "ConvTranspose" or (node.op_type == "Gemm" and not _attr(node, "transB", 0)) else 0
        red = tuple(d for d in range(w.ndim) if d != axis)
        scale = np.maximum(np.abs(w).max(axis=red), 1e-12) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        g.initializer.extend([numpy_helper.from_array(q, f"{name}__q"),
                              numpy_helper.from_array(scale.astype(np.float32), f"{name}__scale"),
                              numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}__zp")])
        dq_nodes.append(helper.make_node("DequantizeLinear", [f"{name}__q", f"{name}__scale", f"{name}__zp"],
                                         [f"{name}__dq"], name=f"{name}__dequant", axis=axis))
        node.input[1] = f"{name}__dq"
        drop.add(name)
    _rebuild(g, [i for i in g.initializer if i.name not in drop], dq_nodes)
    return model


def _rebuild(g, initializers: list, first_nodes: list) -> None:
    """Give graph `g` these initializers and put `first_nodes` (weight decoders: they read initializers only)
    before its own nodes, keeping the node list topologically sorted."""
    del g.initializer[:]
    g.initializer.extend(initializers)
    nodes = first_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def fp16_storage(model: onnx.ModelProto, min_size: int = 256) -> onnx.ModelProto:
    """Every float32 initializer of ≥ `min_size` values stored as float16, read through a Cast to float32 (one
    node each, first in the graph); small ones (biases, norms) stay float32, where halving saves nothing."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    casts, kept = [], []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}__cast",
                                      to=onnx.TensorProto.FLOAT))
    _rebuild(g, kept, casts)
    return model
