"""ONNX export and import, checked by ONNX Runtime.

Needs the optional extra (``pip install cnn[onnx]``: ``onnx>=1.15``, ``onnxruntime>=1.17``).
``import cnn.onnx`` works without it; each function raises an ImportError saying so.

>>> import cnn, cnn.onnx                                           # doctest: +SKIP
>>> cnn.onnx.export(model, "model.onnx")                           # doctest: +SKIP
>>> same = cnn.onnx.load("model.onnx")                             # doctest: +SKIP
>>> session = cnn.onnx.inference_session("model.onnx", threads=2)  # doctest: +SKIP
>>> probs = session.run(None, {"input": x})[0]                     # doctest: +SKIP

What maps to what
-----------------
==========================  ===================================================================
cnn layer                   ONNX nodes (export)
==========================  ===================================================================
``Dense``                   ``Gemm(transB=1)`` (+ the activation's node)
``Conv2D``                  ``Conv`` with explicit ``pads``, ``dilations``, ``group``
                            (+ the activation's node)
``MaxPool2D``               ``MaxPool`` with explicit ``pads``
``AvgPool2D``               ``AveragePool`` with explicit ``pads``, ``count_include_pad=0``
``GlobalAvgPool2D``         ``GlobalAveragePool`` then ``Flatten(axis=1)`` (cnn's output is
                            ``(N, C)``, ONNX's pool keeps ``(N, C, 1, 1)``)
``BatchNormalization``      ``BatchNormalization`` (inference form) reading the running mean
                            and variance, ``epsilon=eps``, ``momentum`` as is (both are the
                            fraction kept); on ``(N, C, H, W)`` and on ``(N, F)``
``Flatten``                 ``Flatten(axis=1)``
``Activation``              ``Relu``, ``Sigmoid``, ``Tanh``, ``LeakyRelu(alpha)``,
                            ``Softmax(axis=-1)``, ``Identity``
``Dropout``                 nothing (the identity at inference)
``Add`` (graph models)      ``Add`` of two tensors, ``Sum`` of more
``Concatenate(axis)``       ``Concat(axis=axis + 1)`` (ONNX counts the batch axis)
==========================  ===================================================================

Graph models (:class:`cnn.Model`) are written call by call, in the order of
``model.get_config()["calls"]``; the calls of a shared layer read one set of initializers.

Import reads the reverse, plus ``MatMul`` (+ a bias ``Add``), ``Gemm`` with any
``transB``/``alpha``/``beta``, ``Reshape`` to ``(N, -1)``, ``Identity`` and ``Dropout``
(both left out; an ``Identity`` of a constant is that constant), ``Constant`` and ``auto_pad``
(``SAME_UPPER``, ``SAME_LOWER``, ``VALID``, resolved to explicit pads from the input's static
shape). ``BatchNormalization`` must be in inference form (``training_mode=0``); its
``epsilon`` and ``momentum`` (float32 in the file) become the shortest decimals that round to
them (PyTorch's 1e-5 stays 1e-5). ``AveragePool`` with ``count_include_pad=1`` is read only
when it has no padding (cnn never counts padded cells); ``GlobalAveragePool`` must be followed
by its flattening (``Flatten`` or ``Reshape`` to ``(N, C)``), which becomes part of cnn's
``GlobalAvgPool2D``. ``Conv`` takes any ``group`` and ``dilations`` (``auto_pad=SAME_*`` with
a dilation is refused: ONNX Runtime does not run that form). The graph may be any DAG of these
from one input to one output: a chain gives a :class:`cnn.Sequential`, branches (``Add``/``Sum``
of tensors of one shape, ``Concat`` on a non-batch axis, residual shortcuts) a
:class:`cnn.Model`. An activation right after a ``Conv``/``Gemm``/``MatMul`` is folded into
that layer, and a bias ``Add`` into the ``MatMul``/``Conv`` before it, when nothing else reads
that layer's output; a ``BatchNormalization`` stays a layer of its own (no folding, so it can
be fine-tuned). Any other operator (or a dilated pool) raises one ValueError listing every
such operator and its nodes.
"""

import numpy as np

from ._common import DEFAULT_OPSET, MIN_OPSET, require

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "IMPORTERS",
    "MIN_OPSET",
    "export",
    "inference_session",
    "load",
    "to_model_proto",
]


def export(model, path, opset=DEFAULT_OPSET):
    """Write a built :class:`cnn.Model` (or :class:`cnn.Sequential`) to ``path`` as an ONNX
    model.

    Parameters
    ----------
    model : cnn.Model or cnn.Sequential
        Built (it has an input shape). Every layer must have an entry in :data:`EXPORTERS`;
        otherwise a ValueError names each layer that has none.
    path : str or os.PathLike
        Written atomically: a temporary file in the same folder, fsync'ed, then
        ``os.replace``'d over ``path``.
    opset : int, default :data:`DEFAULT_OPSET` (17)
        Default-domain opset, from 11 to the newest the installed ``onnx`` knows.

    Notes
    -----
    - Input ``"input"`` of shape ``(N, *model.input_shape)``, output ``"output"`` of shape
      ``(N, *model.output_shape)``, float32; ``N`` is a dynamic (symbolic) batch axis.
    - A float64 model is exported in float32: its weights are rounded to float32 (ONNX
      Runtime's CPU kernels are float32), so its predictions agree with ``model.predict`` to
      float32 rounding, not bit for bit.
    - Pads are always explicit, computed by :func:`cnn.functional.conv2d_padding` and
      :func:`cnn.functional.maxpool2d_padding` (never ``auto_pad``), so the graph computes
      exactly what the cnn layer does.
    - Initializers are named by :meth:`cnn.Model.state_dict` keys (``"0.weight"``); the calls
      of a shared layer read the same initializers. Nodes and other tensors are named by the
      call: ``"3.Conv"``, ``"3.z"``, and ``"3@1.Conv"`` for the second call of layer 3.
    - The output activation (softmax, sigmoid) stays in the graph, so ONNX Runtime's outputs
      compare one to one with ``model.predict``.
    - The graph is checked with ``onnx.checker.check_model(full_check=True)`` before the write.
    """
    from ._export import to_model_proto as _proto
    from ._export import write_atomic
    proto = _proto(model, opset)
    write_atomic(path, proto.SerializeToString())


def to_model_proto(model, opset=DEFAULT_OPSET):
    """The checked ``onnx.ModelProto`` :func:`export` writes (nothing is written)."""
    from ._export import to_model_proto as _proto
    return _proto(model, opset)


def load(path, max_bytes=None):
    """Read an ONNX model made of operators cnn has into a built, uncompiled cnn model.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, optional
        Refuse files larger than this before reading them (default 1 GiB).

    Returns
    -------
    cnn.Sequential or cnn.Model
        A :class:`cnn.Sequential` when the layers form a chain, else a :class:`cnn.Model`
        (built with :func:`cnn.Input` and layer calls), each ONNX node its own layer. Built for
        the graph input's item shape (its batch axis may be symbolic or fixed; the other axes
        must be fixed), float32 (float64 for a double graph), ``seed=0``, not compiled. Weights
        are copies of the file's initializers (two nodes reading one initializer give two
        layers with a copy each).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Naming the file: not ONNX, truncated, too large, unsupported operators (all listed,
        with their nodes), a cycle, a node reading a tensor that is not the model's input, a
        constant or a node's output, several inputs or outputs, absurd dims or attributes, tensors whose dims
        do not match their data, external data outside the file's folder, non-finite weights.

    Notes
    -----
    The file is untrusted: its size is checked before it is parsed, every tensor's dims are
    checked against the bytes it holds before an array is made, attribute lists and values
    are bounded, and every layer's output item is bounded, so memory stays within a small
    multiple of the file's size. External data is read only from files inside the model's
    folder (after resolving symlinks). At most 10,000 nodes of at most 1,024 inputs each are
    read. Nothing in the file is executed.
    """
    from . import _checks, _import
    return _import.load(path, _checks.MAX_FILE_BYTES if max_bytes is None else max_bytes)


def inference_session(path_or_model, threads=1):
    """An ``onnxruntime.InferenceSession`` on the CPU for an ONNX file or a cnn model.

    Parameters
    ----------
    path_or_model : str, os.PathLike, cnn.Model or cnn.Sequential
        A model is exported in memory first (as :func:`export` would write it).
    threads : int >= 1, default 1
        ONNX Runtime's ``intra_op_num_threads``; ``inter_op_num_threads`` is 1 and the
        execution sequential (branches run one after the other, each on ``threads``).

    Notes
    -----
    Idle spinning is turned off (``session.intra_op.allow_spinning = "0"``). By default ONNX
    Runtime's worker threads keep spinning on the cores for a while after each ``run``; in a
    process that then runs cnn's or PyTorch's kernels (a benchmark, a test), those spinning
    threads steal the cores from them and slow them down, so timings of whatever runs next
    would be wrong. Without spinning the workers sleep between runs.
    """
    ort = require("onnxruntime")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    from ..model import Model
    if isinstance(path_or_model, Model):
        source = to_model_proto(path_or_model).SerializeToString()
    else:
        from .._validation import path as _fspath
        source = _fspath(path_or_model, "path_or_model")
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def __getattr__(name):
    # The tables import onnx-free modules only, but load on first use to keep `import cnn.onnx` light.
    if name == "EXPORTERS":
        from ._export import EXPORTERS
        return EXPORTERS
    if name == "IMPORTERS":
        from ._import import IMPORTERS
        return IMPORTERS
    raise AttributeError(f"module 'cnn.onnx' has no attribute {name!r}")

