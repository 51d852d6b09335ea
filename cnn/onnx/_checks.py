"""Reading an untrusted ONNX file: every size is checked before anything is allocated.

A file from outside may be truncated, garbage, or crafted: a tensor header can promise
terabytes, an attribute can hold a million pads, an external-data reference can point at
``/etc/passwd``. Everything here turns such files into a ``ValueError`` that names the file
(and the node or tensor), with memory bounded by a small multiple of the file's size:

- the file's size is checked before it is read (``max_bytes``), then parsed once;
- a tensor's element count (from its dims) must match the bytes it really holds (inline, or in
  its external file) before it is converted; external files must lie inside the model's folder;
- attribute lists are bounded before they are read, ints are bounded in magnitude;
- the input's item shape and every layer's output are bounded (:data:`MAX_ITEM_ELEMENTS`).
"""

import math
import os

import numpy as np

from ._common import MIN_OPSET, max_opset, require

#: Default limit on the file size, checked before parsing.
MAX_FILE_BYTES = 1 << 30
MAX_NODES = 10_000
#: Most inputs one node may list (an Add/Sum/Concat joining many tensors).
MAX_NODE_INPUTS = 1024
#: Largest per-item tensor (elements, without the batch axis) of the input or any layer output.
MAX_ITEM_ELEMENTS = 1 << 26
MAX_DIM = 1 << 20
#: Bound of kernel sizes, strides and pads read from attributes.
MAX_ATTR_INT = 1 << 16
_MAX_ATTR_LIST = 64

# ONNX TensorProto.DataType -> (numpy dtype, the typed field that may hold the values)
_DTYPES = {1: (np.dtype("<f4"), "float_data"), 11: (np.dtype("<f8"), "double_data"),
           7: (np.dtype("<i8"), "int64_data"), 6: (np.dtype("<i4"), "int32_data"),
           9: (np.dtype("?"), "int32_data")}  # bool: Dropout's training_mode
EXTERNAL = 1  # TensorProto.EXTERNAL


class FileError(ValueError):
    """A ValueError about one file: the message starts with its path."""


def error(path, message):
    return FileError(f"{path}: {message}")


def read_model(path, max_bytes):
    """Parse the file at ``path`` into an ``onnx.ModelProto`` (external data not loaded)."""
    onnx = require("onnx")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if not os.path.isfile(path):
        raise error(path, "not a regular file")
    if st.st_size > max_bytes:
        raise error(path, f"the file is {st.st_size} bytes, more than max_bytes={max_bytes}; "
                          f"pass a larger max_bytes if you trust it")
    if st.st_size == 0:
        raise error(path, "the file is empty: not an ONNX model")
    with open(path, "rb") as f:
        data = f.read(st.st_size + 1)  # not max_bytes: read() allocates what it is asked for
    if len(data) != st.st_size:
        raise error(path, f"the file changed size while being read ({st.st_size} -> {len(data)} "
                          f"bytes or more)")
    from google.protobuf.message import DecodeError  # protobuf comes with onnx
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise error(path, f"not an ONNX model, or a truncated one: the protobuf does not parse "
                          f"({type(exc).__name__}: {exc})") from None
    del data
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise error(path, "not an ONNX model (no graph or no IR version): garbage or a truncated "
                          "file")
    _check_opsets(path, proto)
    if len(proto.graph.node) > MAX_NODES:
        raise error(path, f"{len(proto.graph.node)} nodes, more than the {MAX_NODES} this loader "
                          f"reads")
    return proto


def _check_opsets(path, proto):
    versions = {op.domain: op.version for op in proto.opset_import}
    default = versions.get("", versions.get("ai.onnx"))
    if default is None:
        raise error(path, "the model imports no default-domain ('ai.onnx') opset")
    newest = max_opset()
    if not MIN_OPSET <= default <= newest:
        raise error(path, f"opset {default} is not supported (this loader reads opsets "
                          f"{MIN_OPSET} to {newest})")


def default_opset(proto):
    versions = {op.domain: op.version for op in proto.opset_import}
    return versions.get("", versions.get("ai.onnx"))


def attributes(path, node, where):
    """``{name: value}`` of ``node``'s attributes: ints, floats, strings, bounded int and
    float lists, tensors (as TensorProto). Other kinds (graphs, sparse tensors) are refused."""
    onnx = require("onnx")
    A = onnx.AttributeProto
    out = {}
    for a in node.attribute:
        if a.type == A.INT:
            out[a.name] = int(a.i)
        elif a.type == A.FLOAT:
            out[a.name] = float(a.f)
        elif a.type == A.STRING:
            if len(a.s) > 256:
                raise error(path, f"{where}: attribute {a.name!r} is a string of {len(a.s)} bytes")
            out[a.name] = a.s.decode("utf-8", errors="replace")
        elif a.type in (A.INTS, A.FLOATS):
            values = a.ints if a.type == A.INTS else a.floats
            if len(values) > _MAX_ATTR_LIST:
                raise error(path, f"{where}: attribute {a.name!r} holds {len(values)} values, "
                                  f"more than {_MAX_ATTR_LIST}")
            out[a.name] = [int(v) for v in values] if a.type == A.INTS else [float(v) for v in values]
        elif a.type == A.TENSOR:
            out[a.name] = a.t
        else:
            raise error(path, f"{where}: attribute {a.name!r} has a kind ({A.AttributeType.Name(a.type)}) "
                              f"this loader does not read")
    return out


def bounded_ints(path, values, name, where, length, minimum, maximum=MAX_ATTR_INT):
    """``values`` as a list of ``length`` ints in [minimum, maximum], or a ValueError."""
    if not isinstance(values, list) or len(values) != length:
        raise error(path, f"{where}: {name} must be {length} ints, got {values!r}")
    bad = [v for v in values if not minimum <= v <= maximum]
    if bad:
        raise error(path, f"{where}: {name} must hold ints in [{minimum}, {maximum}], got {values}")
    return values


def external_location(path, tensor, folder, nbytes, where):
    """``(file, offset)`` of an external-data tensor of ``nbytes`` bytes, after checking that
    the file lies inside ``folder`` (symlinks resolved) and holds those bytes. Reads nothing."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location")
    if not location:
        raise error(path, f"{where}: external data without a 'location'")
    if "\0" in location or os.path.isabs(location) or os.path.splitdrive(location)[0]:
        raise error(path, f"{where}: external data location {location!r} is absolute; only files "
                          f"inside the model's folder {folder} are read")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root or target == root:
        raise error(path, f"{where}: external data location {location!r} resolves to {target}, "
                          f"outside the model's folder {root}; refused")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise error(path, f"{where}: external data offset/length must be integers, got "
                          f"{info.get('offset')!r}/{info.get('length')!r}") from None
    if not os.path.isfile(target):
        raise error(path, f"{where}: external data file {location!r} does not exist in {root}")
    size = os.path.getsize(target)
    if length is None:
        length = size - offset
    if offset < 0 or length != nbytes or offset + length > size:
        raise error(path, f"{where}: external data {location!r} offset {offset} length {length}: the "
                          f"tensor needs {nbytes} bytes and the file holds {size}")
    return target, offset


def _read_external(path, tensor, folder, nbytes, where):
    target, offset = external_location(path, tensor, folder, nbytes, where)
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise error(path, f"{where}: external data of tensor {tensor.name!r} is truncated")
    return data


def tensor_header(path, tensor, where):
    """``(dtype, dims, nbytes)`` of TensorProto ``tensor``, checked; reads no data."""
    if tensor.data_type not in _DTYPES:
        raise error(path, f"{where}: tensor {tensor.name!r} has ONNX data type {tensor.data_type}; "
                          f"this loader reads float32, float64, int32, int64 and bool")
    dtype, _ = _DTYPES[tensor.data_type]
    dims = list(tensor.dims)
    if len(dims) > 8 or any(d < 0 or d > 1 << 40 for d in dims):
        raise error(path, f"{where}: tensor {tensor.name!r} has dims {dims[:10]}")
    if tensor.HasField("segment"):
        raise error(path, f"{where}: tensor {tensor.name!r} is segmented; not supported")
    return dtype, dims, math.prod(dims) * dtype.itemsize


def check_tensor(path, tensor, folder, where):
    """Check that ``tensor`` holds the bytes its dims promise (inline, or in an external file
    inside ``folder``) without reading or converting any data."""
    dtype, dims, nbytes = tensor_header(path, tensor, where)
    if tensor.data_location == EXTERNAL:
        external_location(path, tensor, folder, nbytes, where)
    elif tensor.raw_data:
        if len(tensor.raw_data) != nbytes:
            raise error(path, f"{where}: tensor {tensor.name!r} of dims {dims} needs {nbytes} bytes, "
                              f"its raw_data holds {len(tensor.raw_data)} (truncated or tampered)")
    elif len(getattr(tensor, _DTYPES[tensor.data_type][1])) != nbytes // dtype.itemsize:
        raise error(path, f"{where}: tensor {tensor.name!r} of dims {dims} needs {nbytes // dtype.itemsize} "
                          f"values, it holds {len(getattr(tensor, _DTYPES[tensor.data_type][1]))} "
                          f"(truncated or tampered)")


def tensor_array(path, tensor, folder, where):
    """A checked NumPy copy of TensorProto ``tensor``: dims, dtype and data size agree before
    any array is made; floats must be finite."""
    dtype, dims, nbytes = tensor_header(path, tensor, where)
    count = nbytes // dtype.itemsize
    field = _DTYPES[tensor.data_type][1]
    if tensor.data_location == EXTERNAL:
        arr = np.frombuffer(_read_external(path, tensor, folder, nbytes, where), dtype=dtype)
    elif tensor.raw_data:
        if len(tensor.raw_data) != nbytes:
            raise error(path, f"{where}: tensor {tensor.name!r} of dims {dims} needs {nbytes} bytes, "
                              f"its raw_data holds {len(tensor.raw_data)} (truncated or tampered)")
        arr = np.frombuffer(tensor.raw_data, dtype=dtype)
    else:
        values = getattr(tensor, field)
        if len(values) != count:
            raise error(path, f"{where}: tensor {tensor.name!r} of dims {dims} needs {count} values, "
                              f"it holds {len(values)} (truncated or tampered)")
        arr = np.asarray(values, dtype=dtype)
    arr = arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise error(path, f"{where}: tensor {tensor.name!r} holds NaN/inf values")
    return arr


def item_shape(path, value_info, what):
    """``(dtype, per-item shape)`` of a graph input: float32/float64, rank 2 or 4, the batch
    axis free, every other dim a fixed positive int; bounded."""
    onnx = require("onnx")
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        raise error(path, f"{what} {value_info.name!r} is not a tensor")
    elem = t.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise error(path, f"{what} {value_info.name!r} has element type "
                          f"{onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else elem}; "
                          f"cnn models take float32 or float64")
    if not t.tensor_type.HasField("shape"):
        raise error(path, f"{what} {value_info.name!r} has no shape; cnn needs the item shape")
    dims = t.tensor_type.shape.dim
    if len(dims) not in (2, 4):
        raise error(path, f"{what} {value_info.name!r} has rank {len(dims)}; cnn reads (N, features) "
                          f"or (N, C, H, W) inputs")
    shape = []
    for i, d in enumerate(dims[1:], 1):
        if d.WhichOneof("value") != "dim_value" or not 1 <= d.dim_value <= MAX_DIM:
            got = d.dim_value if d.WhichOneof("value") == "dim_value" else (d.dim_param or "unknown")
            raise error(path, f"{what} {value_info.name!r}: dim {i} must be a fixed int in [1, {MAX_DIM}], "
                              f"got {got!r}")
        shape.append(int(d.dim_value))
    check_item(path, tuple(shape), f"{what} {value_info.name!r}")
    dtype = np.float32 if elem == onnx.TensorProto.FLOAT else np.float64
    return np.dtype(dtype), tuple(shape)


def check_item(path, shape, what):
    """Refuse per-item shapes above :data:`MAX_ITEM_ELEMENTS` elements."""
    if math.prod(shape) > MAX_ITEM_ELEMENTS:
        raise error(path, f"{what} has item shape {shape} ({math.prod(shape)} elements per item), more "
                          f"than the {MAX_ITEM_ELEMENTS} this loader accepts")
