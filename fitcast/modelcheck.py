"""Check a model from a server before any runtime sees it.

An ONNX file is a program for the runtime that loads it: a graph with control flow can loop
for ever, an initializer with external data reads a file from the player's disk, an unusual
operator or shape reaches code paths a runtime was never hardened for (a 189-byte file
crashed OpenVINO).  fitcast's own networks are a short chain of convolutions, activations,
quantise/dequantise pairs and a pixel shuffle, so the player accepts only that shape of
program: :func:`check_model` parses the bytes with ``onnx`` (protobuf, no runtime) and
refuses anything else with one line (:class:`UnsafeModelError`).
"""

from __future__ import annotations

from typing import Final

import onnx
from onnx import AttributeProto, TensorProto

from fitcast.errors import UnsafeModelError

# Every operator fitcast's networks export to (fp32 and QDQ int8), plus the harmless elementwise
# ones a differently exported residual net may use.  No control flow, no shape or memory ops.
ALLOWED_OPS: Final = frozenset({
    "Conv", "Relu", "PRelu", "LeakyRelu", "Clip", "Add", "Mul", "Concat", "DepthToSpace",
    "QuantizeLinear", "DequantizeLinear", "Identity",
})
OPSETS: Final = range(11, 23)  # default-domain opset versions accepted
MAX_NODES: Final = 512
MAX_CHANNELS: Final = 512  # a tensor dimension a weight may have (fitcast's widest is 64)
MAX_KERNEL: Final = 9
MAX_BLOCK: Final = 4  # DepthToSpace: the scale
MAX_WEIGHTS: Final = 8 << 20  # elements over all initializers
MAX_STATIC_DIM: Final = 4096  # a fixed input dimension (batch or window side)


def check_model(data: bytes, *, name: str = "model") -> onnx.ModelProto:
    """Parse ``data`` and refuse anything that is not a small feed-forward image network.

    Returns the parsed model.  Checks: parses as ONNX; default domain only, opset 11–22, no
    functions; at most :data:`MAX_NODES` nodes, each of :data:`ALLOWED_OPS`, without graph
    attributes (no subgraphs); initializers stored inline (no external data), small, with
    bounded dimensions; Conv kernels and DepthToSpace blocks of fitcast's sizes; one 4-D float
    input with 3 channels and one 4-D output, fixed dimensions (if any) bounded.
    """
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for garbage
        raise UnsafeModelError(f"{name}: not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph

    def refuse(why: str) -> UnsafeModelError:
        return UnsafeModelError(f"{name}: refused before loading: {why}")

    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx") or opset.version not in OPSETS:
            raise refuse(f"opset {opset.domain or 'ai.onnx'} {opset.version} (fitcast models use ai.onnx "
                         f"{OPSETS.start}-{OPSETS.stop - 1})")
    if len(model.functions):
        raise refuse("it defines functions")
    if len(graph.node) > MAX_NODES:
        raise refuse(f"{len(graph.node)} nodes (at most {MAX_NODES})")
    if len(graph.sparse_initializer):
        raise refuse("sparse initializers")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            raise refuse(f"operator {node.domain + '.' if node.domain else ''}{node.op_type} is not one fitcast's "
                         f"networks use ({', '.join(sorted(ALLOWED_OPS))})")
        for attr in node.attribute:
            if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) or attr.HasField("g") or len(attr.graphs):
                raise refuse(f"{node.op_type} carries a subgraph")
            if attr.ref_attr_name:
                raise refuse(f"{node.op_type} refers to a function attribute")
            if node.op_type == "Conv" and attr.name in ("kernel_shape", "dilations", "strides") and (
                    any(v < 1 or v > MAX_KERNEL for v in attr.ints)):
                raise refuse(f"Conv {attr.name} {list(attr.ints)} (1..{MAX_KERNEL})")
            if node.op_type == "DepthToSpace" and attr.name == "blocksize" and not 1 <= attr.i <= MAX_BLOCK:
                raise refuse(f"DepthToSpace blocksize {attr.i} (1..{MAX_BLOCK})")
    weights = 0
    for init in graph.initializer:
        if init.data_location == TensorProto.EXTERNAL or len(init.external_data):
            raise refuse(f"initializer {init.name!r} has external data (a file outside the model)")
        if any(d < 0 or d > MAX_CHANNELS * MAX_KERNEL for d in init.dims):
            raise refuse(f"initializer {init.name!r} has dimensions {list(init.dims)}")
        count = 1
        for d in init.dims:
            count *= d
        weights += count
    if weights > MAX_WEIGHTS:
        raise refuse(f"{weights} weights (at most {MAX_WEIGHTS})")
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise refuse(f"{len(inputs)} inputs and {len(graph.output)} outputs (fitcast models have one of each)")
    for value, role in ((inputs[0], "input"), (graph.output[0], "output")):
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type != TensorProto.FLOAT:
            raise refuse(f"the {role} is not a float tensor")
        dims = tensor.shape.dim
        if len(dims) != 4:
            raise refuse(f"the {role} has rank {len(dims)}, not 4 (NCHW)")
        fixed = [d.dim_value for d in dims if d.HasField("dim_value")]
        if any(v < 1 or v > MAX_STATIC_DIM for v in fixed):
            raise refuse(f"the {role} has dimensions {fixed}")
        if role == "input" and not (dims[1].HasField("dim_value") and dims[1].dim_value == 3):
            raise refuse("the input does not have 3 channels")
    return model
