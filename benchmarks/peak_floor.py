"""The analytic memory floor of an edgediff configuration (MiB), against which the peak-memory rows are read:

    baseline RSS of the process before the model loads (measured in that same run: interpreter, numpy,
    onnxruntime, pillow, the CLI)
  + resident weights (bytes of the ONNX file's initializers)
  + two image buffers (x_t and x_{t-1}: 2 × C × H × W × 4 bytes)
  + the largest set of simultaneously live activation tensors of one cell at batch 1: shapes from
    onnx.shape_inference, a liveness pass over the topologically ordered nodes (a tensor lives from the node that
    makes it to its last reader; tensors computable from initializers alone count as weights, not activations).
"""

from __future__ import annotations

from pathlib import Path

from edgediff.units import MIB


def _const_derived(graph) -> set[str]:
    """Names of tensors computable from initializers and Constant nodes alone (weights after constant folding)."""
    known = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all((not x) or x in known for x in node.input)):
            known.update(o for o in node.output if o)
    return known


def _tensor_bytes(vi) -> int | None:
    import onnx

    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    n = 1
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        n *= d.dim_value
    return n * onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize


def live_activation_peak(onnx_path: str | Path, batch: int = 1) -> dict:
    """Largest sum of simultaneously live activation tensors (bytes) over the graph's topological order, batch 1."""
    import onnx

    model = onnx.load(str(onnx_path))
    g = model.graph
    for inp in list(g.input) + list(g.output):
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
                d.dim_value = batch
    del g.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    sizes: dict[str, int] = {}
    unknown = []
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        b = _tensor_bytes(vi)
        if b is not None:
            sizes[vi.name] = b
    weights = _const_derived(inferred)
    init_bytes = sum(int(np_bytes(t)) for t in inferred.initializer)
    last_use: dict[str, int] = {}
    for i, node in enumerate(inferred.node):
        for x in node.input:
            if x:
                last_use[x] = i
    outputs = {o.name for o in inferred.output}
    live: dict[str, int] = {}
    for inp in inferred.input:
        if inp.name not in weights:
            live[inp.name] = sizes.get(inp.name, 0)
    peak, peak_node = sum(live.values()), None
    for i, node in enumerate(inferred.node):
        for o in node.output:
            if o and o not in weights:
                if o not in sizes:
                    unknown.append(o)
                live[o] = sizes.get(o, 0)
        cur = sum(live.values())
        if cur > peak:
            peak, peak_node = cur, f"{node.op_type}:{node.name}"
        for x in set(node.input) | set(node.output):
            if x in live and last_use.get(x, -1) <= i and x not in outputs:
                del live[x]
    return {"activation_peak_bytes": int(peak), "peak_node": peak_node, "initializer_bytes": int(init_bytes),
            "unknown_shapes": len(unknown), "nodes": len(inferred.node)}


def np_bytes(t) -> int:
    import onnx

    n = 1
    for d in t.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def floor_mb(baseline_mb: float, graph: dict, resolution: int, channels: int = 3) -> float:
    images = 2 * channels * resolution * resolution * 4
    return baseline_mb + (graph["initializer_bytes"] + images + graph["activation_peak_bytes"]) / MIB
