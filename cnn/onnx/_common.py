"""What the exporter and the importer share: the lazy imports of ``onnx`` / ``onnxruntime``,
the pinned opset, and the correspondence between cnn activations and ONNX operators."""

import importlib

#: The opset :func:`cnn.onnx.export` writes by default. 17 is read by ONNX Runtime >= 1.11
#: and by every current converter, and every operator cnn writes (Conv, MaxPool, AveragePool,
#: GlobalAveragePool, BatchNormalization, Gemm, Flatten,
#: Relu, LeakyRelu, Sigmoid, Tanh, Softmax with ``axis=-1``, Identity) has its final form there.
DEFAULT_OPSET = 17
#: The oldest opset written or read: opset 11 made Gemm's C optional and gave Conv/MaxPool
#: their current padding attributes. Older files are refused.
MIN_OPSET = 11

_INSTALL = "pip install cnn[onnx]"  # the extra: onnx>=1.15, onnxruntime>=1.17


def require(module):
    """Import ``module`` ("onnx" or "onnxruntime"), or raise an ImportError that says how to
    install the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"cnn.onnx needs the {module!r} package, which cannot be imported "
                          f"({exc}); install it with `{_INSTALL}`") from None


def max_opset():
    """The newest default-domain opset the installed ``onnx`` knows."""
    return require("onnx").defs.onnx_opset_version()


# cnn activation name -> (ONNX op_type, attributes from the activation object)
ACTIVATION_OPS = {
    "relu": ("Relu", lambda act: {}),
    "sigmoid": ("Sigmoid", lambda act: {}),
    "tanh": ("Tanh", lambda act: {}),
    "leaky_relu": ("LeakyRelu", lambda act: {"alpha": float(act.alpha)}),
    # cnn's softmax normalises flat (N, classes) rows: the last axis
    "softmax": ("Softmax", lambda act: {"axis": -1}),
}
IDENTITY_ACTIVATIONS = ("identity", "linear")
