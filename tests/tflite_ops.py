"""The kernels a converted model really runs, as kernel kinds (what model_kernels must match)."""

import collections

from ai_edge_litert.interpreter import Interpreter

from fdi_keras.export import to_tflite

# TFLite op -> kernel kind. "add" is any element-wise op; RESHAPE is free (it relabels a
# buffer); cropping runs as a STRIDED_SLICE; a GRU/LSTM is a WHILE loop plus the STRIDED_SLICE
# that takes its last step, both part of the recurrent kernel as profiled.
OP_KIND = {
    "CONV_2D": "conv2d",
    "DEPTHWISE_CONV_2D": "depthwise_conv2d",
    "FULLY_CONNECTED": "dense",
    "MEAN": "global_pool",
    "REDUCE_MAX": "global_pool",
    "ADD": "add",
    "MUL": "add",
    "SUB": "add",
    "SQUARED_DIFFERENCE": "squared_difference",
    "RSQRT": "add",
    "NEG": "add",
    "SOFTMAX": "softmax",
    "MAX_POOL_2D": "pool2d",
    "AVERAGE_POOL_2D": "pool2d",
    "CONCATENATION": "concat",
    "PAD": "pad",
    "STRIDED_SLICE": "pad",
    "LOCAL_RESPONSE_NORMALIZATION": "lrn",
    "LOGISTIC": "activation",
    "TANH": "activation",
    "RELU": "activation",
    "RELU6": "activation",
    "HARD_SWISH": "activation",
    "GELU": "activation",
}


def _op_kind_name(op, shapes) -> str:
    """The op's name, with a CONV_2D of one input channel per group (its filter's last axis
    1, its input's more: ConvNeXt's grouped 7x7 convolutions) as the depthwise conv XNNPack
    runs it as."""
    if op["op_name"] == "CONV_2D":
        data, kernel = (shapes[i] for i in op["inputs"][:2])
        if kernel[-1] == 1 < data[-1]:
            return "DEPTHWISE_CONV_2D"
    return op["op_name"]


def runtime_kinds(model, recurrent: str = "gru") -> collections.Counter:
    """Kernel kinds of the ops of `model` converted to TFLite (WHILE loops as `recurrent`)."""
    interpreter = Interpreter(model_content=to_tflite(model))
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    ops = [_op_kind_name(op, shapes) for op in interpreter._get_ops_details()]
    for _ in range(ops.count("WHILE")):
        ops.remove("STRIDED_SLICE")
    return collections.Counter(
        recurrent if op == "WHILE" else OP_KIND[op] for op in ops if op in OP_KIND or op == "WHILE"
    )
