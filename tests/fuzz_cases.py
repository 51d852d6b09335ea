"""Fuzz cases: hypothesis draws valid AND invalid arguments for ``cnn.functional``, the layers
and small ``Sequential`` stacks.

Not collected by a plain ``pytest tests`` (the name does not match ``test_*.py``):
``tests/test_fuzz.py`` runs this file in a child ``python -m pytest`` so that a crash in a
kernel (a segfault, an abort) fails one test instead of killing the whole run.

The contract checked on every draw:

- an argument that breaks a documented rule (an independent predicate below decides) raises
  ``ValueError`` or ``TypeError``; any other exception, and no exception, is a bug;
- a valid call returns arrays of the documented shape and dtype, finite for finite inputs,
  and equal to ``cnn.reference`` (plain NumPy from the seed's equations) within a float
  tolerance (max-pool: exactly, argmax included).

``CNN_FUZZ_EXAMPLES`` (default 150) sets the number of draws per test.
"""

import numbers
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import cnn
from cnn import functional as F
from cnn import layers, reference

EXAMPLES = int(os.environ.get("CNN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
DOCUMENTED = (ValueError, TypeError)
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}

# Values that are not ints of any kind; a few odd but valid ones (np.int64) are drawn separately.
NOT_INTS = [None, 1.5, "2", True, False, [1], (1, 2, 3), (), np.float64(2.0), b"1", object()]
# Sizes, strides and paddings reach the kernels as C ints: larger ones must be refused.
MAX_INT = 2 ** 31 - 1
HUGE = [2 ** 31, 2 ** 40, 2 ** 70]


# ----------------------------------------------------------------------------- predicates


def is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def pair(v, minimum, maximum=MAX_INT):
    """``(a, b)`` when ``v`` is a valid int-or-pair with both in [minimum, maximum], else None."""
    if is_int(v):
        v = (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(a) for a in v) \
            and min(v) >= minimum and (maximum is None or max(v) <= maximum):
        return int(v[0]), int(v[1])
    return None


def explicit_pads(p, maximum=MAX_INT):
    if is_int(p):
        p = (p,) * 4
    elif isinstance(p, (tuple, list)) and len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    if isinstance(p, (tuple, list)) and len(p) == 4 and all(is_int(a) for a in p) and min(p) >= 0 \
            and (maximum is None or max(p) <= maximum):
        return tuple(int(a) for a in p)
    return None


def tf_same(n, k, s):
    """TensorFlow/Keras "same" on one axis: total max((ceil(n/s) - 1)*s + k - n, 0), the
    smaller half first (for s = 1: k - 1, floor half first)."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def conv_pads(padding, kh, kw, hw=(1, 1), s=(1, 1)):
    """(top, bottom, left, right) from DESIGN.md's rules, or None when invalid."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            return tf_same(hw[0], kh, s[0]) + tf_same(hw[1], kw, s[1])
        return None
    return explicit_pads(padding)


def pool_pads(padding, k, s, hw):
    """Max-pool pads, or None when invalid ('tile' needs stride <= size; pads < window)."""
    (kh, kw), (sh, sw), (h, w) = k, s, hw
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads = (0, 0, 0, 0)
        elif mode == "tile":
            if sh > kh or sw > kw:
                return None
            ph = next(p for p in range(kh + sh + 1) if h + p >= kh and (h + p - kh) % sh == 0)
            pw = next(p for p in range(kw + sw + 1) if w + p >= kw and (w + p - kw) % sw == 0)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        elif mode == "same":
            pads = tf_same(h, kh, sh) + tf_same(w, kw, sw)
        else:
            return None
    else:
        pads = explicit_pads(padding)
        if pads is None:
            return None
    if max(pads[:2]) >= kh or max(pads[2:]) >= kw:
        return None
    return pads


def out_size(n, k, s, before, after):
    padded = n + before + after
    return None if padded < k else (padded - k) // s + 1


def float_array(a):
    """The ndarray ``a`` would become, if it is a float32/float64 array (or a list of floats)."""
    if isinstance(a, np.ndarray):
        return a if a.dtype in FLOATS else None
    if isinstance(a, list):
        try:
            arr = np.asarray(a)
        except ValueError:
            return None
        return arr if arr.dtype in FLOATS else None
    return None


def expect_error(call, why):
    """``call()`` must raise ValueError or TypeError (any other outcome is a bug)."""
    note(f"expected a ValueError/TypeError because: {why}")
    event("invalid")
    try:
        result = call()
    except DOCUMENTED as exc:
        assert str(exc), "the error message is empty"
        return exc
    raise AssertionError(f"no error for an invalid argument ({why}); got {type(result).__name__}")


def assert_close(actual, expected, dtype):
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert np.isfinite(actual).all()
    scale = max(float(np.abs(expected).max()) if expected.size else 0.0, 1.0)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * scale)


# ----------------------------------------------------------------------------- strategies

small = st.integers(0, 5)
dtypes = st.sampled_from([np.float32, np.float64] * 4 + [np.float16, np.int32, np.complex64,
                                                          np.bool_, np.object_])
ints_or_pairs = st.one_of(
    st.integers(-1, 4), st.integers(1, 3).map(np.int64), st.sampled_from(HUGE),
    st.tuples(st.integers(1, 2), st.sampled_from(HUGE)),
    st.tuples(st.integers(-1, 4), st.integers(-1, 4)),
    st.lists(st.integers(0, 4), min_size=2, max_size=2),
    st.sampled_from(NOT_INTS))
conv_paddings = st.one_of(
    st.sampled_from(["valid", "same", "SAME", "Valid", "full", "tile", ""]),
    st.integers(-1, 3), st.sampled_from(HUGE),
    st.tuples(st.integers(-1, 3), st.integers(0, 3)),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(-1, 3)),
    st.sampled_from(NOT_INTS))
pool_paddings = st.one_of(
    st.sampled_from(["tile", "valid", "TILE", "same", "full"]),
    st.integers(-1, 2),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(-1, 2)),
    st.sampled_from(NOT_INTS))


def make_array(data, shape, dtype, name):
    """A finite array of ``shape`` and ``dtype`` (random values), sometimes a non-contiguous
    view, sometimes a nested list."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label=f"{name} seed"))
    if dtype is np.object_:
        return np.empty(shape, dtype=object)
    a = (rng.standard_normal(shape) * 2).astype(dtype)
    form = data.draw(st.sampled_from(["plain"] * 6 + ["strided", "fortran", "list"]), label=f"{name} form")
    if form == "strided" and a.ndim:
        big = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if form == "fortran":
        return np.asfortranarray(a)
    if form == "list" and a.dtype == np.float64 and a.size:
        return a.tolist()
    return a


def draw_shape(data, ndim_ok, dims, name):
    """Mostly ``ndim_ok`` dims drawn from ``dims``; sometimes one more or one fewer."""
    ndim = data.draw(st.sampled_from([ndim_ok] * 8 + [ndim_ok - 1, ndim_ok + 1]), label=f"{name} ndim")
    return tuple(data.draw(dims, label=f"{name} dim {i}") for i in range(max(ndim, 0)))


# ----------------------------------------------------------------------------- cnn.functional


valid_ints_or_pairs = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
valid_conv_paddings = st.one_of(
    st.sampled_from(["valid", "same", "SAME"]), st.integers(0, 2),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)))


def mutation(data, kinds):
    """'none' about 60% of the time, else one of ``kinds``: one argument is broken."""
    return data.draw(st.sampled_from(["none"] * (len(kinds) + len(kinds) // 2) + kinds), label="mutation")


def conv_case(data):
    """Valid conv arguments, then (sometimes) one of them broken."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    n, c = data.draw(st.integers(0, 3), label="N"), data.draw(st.integers(1, 3), label="C")
    h, w = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    k, kh, kw = (data.draw(st.integers(1, 4), label=lbl) for lbl in ("K", "kh", "kw"))
    xs, ws, bs = [n, c, h, w], [k, c, kh, kw], [k]
    xdt = wdt = bdt = dtype
    stride = data.draw(valid_ints_or_pairs, label="stride")
    padding = data.draw(valid_conv_paddings, label="padding")
    has_b = data.draw(st.booleans(), label="bias")
    m = mutation(data, ["x_dtype", "w_dtype", "b_dtype", "x_ndim", "w_ndim", "channels", "zero_dim",
                        "b_shape", "stride", "padding", "big_kernel", "zero_hw"])
    if m == "x_dtype":
        xdt = data.draw(dtypes, label="x dtype")
    elif m == "w_dtype":
        wdt = data.draw(dtypes, label="w dtype")
    elif m == "b_dtype":
        has_b, bdt = True, data.draw(dtypes, label="b dtype")
    elif m == "x_ndim":
        xs = data.draw(st.sampled_from([xs[1:], xs + [1], xs[:2]]), label="x shape")
    elif m == "w_ndim":
        ws = data.draw(st.sampled_from([ws[1:], ws + [1]]), label="w shape")
    elif m == "channels":
        ws[1] = c + data.draw(st.integers(1, 2))
    elif m == "zero_dim":
        ws[data.draw(st.integers(0, 3), label="which w dim")] = 0
    elif m == "b_shape":
        has_b, bs = True, data.draw(st.sampled_from([[k + 1], [k, 1], [], [0]]), label="b shape")
    elif m == "stride":
        stride = data.draw(ints_or_pairs, label="bad stride?")
    elif m == "padding":
        padding = data.draw(conv_paddings, label="bad padding?")
    elif m == "big_kernel":
        ws[2] = h + 3
    elif m == "zero_hw":  # an empty plane: valid if the padding makes room for the kernel
        xs[data.draw(st.sampled_from([2, 3]))] = 0
    x = make_array(data, tuple(xs), xdt, "x")
    wt = make_array(data, tuple(ws), wdt, "w")
    b = make_array(data, tuple(bs), bdt, "b") if has_b else None
    return x, wt, b, stride, padding


def conv_problem(x, w, b, stride, padding):
    """None when valid (then also the geometry), else the reason it is invalid."""
    xa, wa = float_array(x), float_array(w)
    ba = None if b is None else float_array(b)
    if xa is None or wa is None or (b is not None and ba is None):
        return "an array is not float32/float64", None
    if xa.dtype != wa.dtype or (ba is not None and ba.dtype != xa.dtype):
        return "dtypes differ", None
    if xa.ndim != 4 or wa.ndim != 4 or (ba is not None and ba.ndim != 1):
        return "wrong ndim", None
    n, c, h, wd = xa.shape
    k, cw, kh, kw = wa.shape
    if cw != c or min(k, c, kh, kw) < 1:
        return "channels differ or an empty filter bank", None
    if ba is not None and ba.shape != (k,):
        return "bias shape", None
    s = pair(stride, 1)
    if s is None:
        return f"stride {stride!r}", None
    pads = conv_pads(padding, kh, kw, (h, wd), s)
    if pads is None:
        return f"padding {padding!r}", None
    oh = out_size(h, kh, s[0], pads[0], pads[1])
    ow = out_size(wd, kw, s[1], pads[2], pads[3])
    if oh is None or ow is None:
        return "kernel larger than the padded input", None
    return None, (xa, wa, ba, s, pads, (n, k, oh, ow))


@FUZZ
@given(st.data())
def test_conv2d(data):
    x, w, b, stride, padding = conv_case(data)
    relu = data.draw(st.sampled_from([None, None, "relu", "identity", "sigmoid", 1]), label="activation")
    why, geo = conv_problem(x, w, b, stride, padding)
    if relu not in (None, "relu", "identity", "linear"):
        why = why or f"activation {relu!r}"
    call = lambda: F.conv2d(x, w, b, stride=stride, padding=padding, activation=relu)  # noqa: E731
    if why:
        expect_error(call, why)
        return
    xa, wa, ba, s, pads, shape = geo
    event("valid")
    y = call()
    want = reference.conv2d(xa.astype(np.float64), wa.astype(np.float64),
                            None if ba is None else ba.astype(np.float64), s, pads)
    if relu == "relu":
        want = np.maximum(want, 0)
    assert y.shape == shape
    assert_close(y, want, xa.dtype)


@FUZZ
@given(st.data())
def test_conv2d_backward(data):
    x, w, _, stride, padding = conv_case(data)
    why, geo = conv_problem(x, w, None, stride, padding)
    need_dx = data.draw(st.booleans(), label="need_dx")
    relu = data.draw(st.sampled_from([None, None, "relu"]), label="activation")
    if why is None:
        xa, wa, _, s, pads, shape = geo
        dshape = shape if data.draw(st.integers(0, 5)) else data.draw(
            st.tuples(small, small, small, small), label="dy shape (mutated)")
        dy = make_array(data, dshape, xa.dtype, "dy")
        yout = None
        if relu == "relu" and data.draw(st.integers(0, 5)):
            yout = np.maximum(reference.conv2d(xa.astype(np.float64), wa.astype(np.float64), None,
                                               s, pads), 0).astype(xa.dtype)
        if np.shape(dy) != shape:
            why = f"dy shape {np.shape(dy)} is not the output's {shape}"
        elif relu == "relu" and yout is None:
            why = "activation='relu' without y"
    else:
        dy = make_array(data, (1, 1, 1, 1), np.float32, "dy")
        yout = None
    call = lambda: F.conv2d_backward(dy, x, w, stride, padding, need_dx=need_dx,  # noqa: E731
                                     activation=relu, y=yout)
    if why:
        expect_error(call, why)
        return
    event("valid")
    dx, dw, db = call()
    dya = np.asarray(dy, np.float64)
    if relu == "relu":
        dya = dya * (yout > 0)
    rdx, rdw, rdb = reference.conv2d_backward(dya, xa.astype(np.float64), wa.astype(np.float64), s, pads)
    if need_dx:
        assert_close(dx, rdx, xa.dtype)
    else:
        assert dx is None
    assert_close(dw, rdw, xa.dtype)
    assert_close(db, rdb, xa.dtype)


def pool_case(data):
    """Valid max-pool arguments, then (sometimes) one of them broken."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    xs = [data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 3), label="C"),
          data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")]
    size = data.draw(valid_ints_or_pairs, label="size")
    stride = data.draw(st.one_of(st.none(), valid_ints_or_pairs), label="stride")
    padding = data.draw(st.one_of(st.sampled_from(["tile", "valid", "Tile"]), st.integers(0, 1),
                                  st.tuples(st.integers(0, 1), st.integers(0, 1))), label="padding")
    m = mutation(data, ["dtype", "ndim", "size", "stride", "padding", "big_window", "zero_hw"])
    if m == "dtype":
        dtype = data.draw(dtypes, label="bad dtype?")
    elif m == "ndim":
        xs = data.draw(st.sampled_from([xs[1:], xs + [2]]), label="x shape")
    elif m == "size":
        size = data.draw(ints_or_pairs, label="bad size?")
    elif m == "stride":
        stride = data.draw(ints_or_pairs, label="bad stride?")
    elif m == "padding":
        padding = data.draw(pool_paddings, label="bad padding?")
    elif m == "big_window":
        size, padding = xs[-1] + 2, "valid"
    elif m == "zero_hw":  # an empty plane has no cell to win a window, whatever the padding
        xs[data.draw(st.sampled_from([2, 3]))] = 0
    return make_array(data, tuple(xs), dtype, "x"), size, stride, padding


def pool_problem(x, size, stride, padding):
    xa = float_array(x)
    if xa is None:
        return "x is not float32/float64", None
    if xa.ndim != 4:
        return "wrong ndim", None
    if 0 in xa.shape[2:]:
        return "an empty (H, W) plane", None
    k = pair(size, 1)
    if k is None:
        return f"size {size!r}", None
    s = k if stride is None else pair(stride, 1)
    if s is None:
        return f"stride {stride!r}", None
    pads = pool_pads(padding, k, s, xa.shape[2:])
    if pads is None:
        return f"padding {padding!r} for size {k}, stride {s}", None
    oh = out_size(xa.shape[2], k[0], s[0], pads[0], pads[1])
    ow = out_size(xa.shape[3], k[1], s[1], pads[2], pads[3])
    if oh is None or ow is None:
        return "window larger than the padded input", None
    return None, (xa, k, s, pads, xa.shape[:2] + (oh, ow))


@FUZZ
@given(st.data())
def test_maxpool2d_and_backward(data):
    x, size, stride, padding = pool_case(data)
    why, geo = pool_problem(x, size, stride, padding)
    call = lambda: F.maxpool2d(x, size, stride, padding)  # noqa: E731
    if why:
        expect_error(call, why)
        return
    xa, k, s, pads, shape = geo
    event("valid")
    y, argmax = call()
    ry, rarg = reference.maxpool2d(xa, k, s, pads)
    assert y.shape == shape and argmax.shape == shape and y.dtype == xa.dtype
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(argmax, rarg)

    # backward, with argmax / x_shape / dy sometimes damaged
    dy = make_array(data, shape, xa.dtype, "dy")
    arg, x_shape = argmax, xa.shape
    damage = data.draw(st.sampled_from(["none"] * 4 + ["range", "negative", "float", "shape",
                                                        "x_shape", "x_shape_type"]), label="damage")
    plane = xa.shape[2] * xa.shape[3]
    if damage == "range":
        arg = argmax.copy()
        arg.flat[0] = plane
    elif damage == "negative":
        arg = argmax.copy()
        arg.flat[-1] = -1
    elif damage == "float":
        arg = argmax.astype(np.float64)
    elif damage == "shape":
        arg = argmax[:, :, :-1]
    elif damage == "x_shape":
        x_shape = (xa.shape[0] + 1,) + xa.shape[1:]
    elif damage == "x_shape_type":
        x_shape = tuple(float(d) for d in xa.shape)
    back = lambda: F.maxpool2d_backward(dy, arg, x_shape)  # noqa: E731
    if damage != "none":
        expect_error(back, f"damaged: {damage}")
        return
    dx = back()
    want = reference.maxpool2d_backward(np.asarray(dy, np.float64), argmax, xa.shape)
    assert_close(dx, want, xa.dtype)


@FUZZ
@given(st.data())
def test_linear_and_backward(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    n, fin, fout = data.draw(st.integers(0, 4), label="N"), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    xs, ws, bs, dys = [n, fin], [fout, fin], [fout], [n, fout]
    xdt = wdt = bdt = dtype
    has_b = data.draw(st.booleans(), label="bias")
    relu = data.draw(st.sampled_from([None, "relu"]), label="activation")
    m = mutation(data, ["x_dtype", "w_dtype", "b_dtype", "x_ndim", "features", "zero_out", "b_shape",
                        "dy_shape", "activation"])
    if m == "x_dtype":
        xdt = data.draw(dtypes, label="x dtype")
    elif m == "w_dtype":
        wdt = data.draw(dtypes, label="w dtype")
    elif m == "b_dtype":
        has_b, bdt = True, data.draw(dtypes, label="b dtype")
    elif m == "x_ndim":
        xs = data.draw(st.sampled_from([xs[:1], xs + [1]]), label="x shape")
    elif m == "features":
        ws[1] = fin + 1
    elif m == "zero_out":
        ws[0] = 0
    elif m == "b_shape":
        has_b, bs = True, [fout + 1]
    elif m == "dy_shape":
        dys = [n, fout + 1]
    elif m == "activation":
        relu = data.draw(st.sampled_from(["sigmoid", "softmax", 0]), label="bad activation?")
    x, w = make_array(data, tuple(xs), xdt, "x"), make_array(data, tuple(ws), wdt, "w")
    b = make_array(data, tuple(bs), bdt, "b") if has_b else None
    xa, wa, ba = float_array(x), float_array(w), None if b is None else float_array(b)
    why = None
    if xa is None or wa is None or (b is not None and ba is None):
        why = "an array is not float32/float64"
    elif xa.dtype != wa.dtype or (ba is not None and ba.dtype != xa.dtype):
        why = "dtypes differ"
    elif xa.ndim != 2 or wa.ndim != 2 or wa.shape[1] != xa.shape[1] or wa.shape[0] < 1:
        why = f"shapes x {xa.shape}, w {wa.shape}"
    elif ba is not None and ba.shape != (wa.shape[0],):
        why = "bias shape"
    elif relu not in (None, "relu"):
        why = f"activation {relu!r}"
    call = lambda: F.linear(x, w, b, activation=relu)  # noqa: E731
    if why:
        expect_error(call, why)
        return
    event("valid")
    y = call()
    z = xa.astype(np.float64) @ wa.astype(np.float64).T + (0 if ba is None else ba.astype(np.float64))
    want = np.maximum(z, 0) if relu == "relu" else z
    assert_close(y, want, xa.dtype)
    dy = make_array(data, tuple(dys), xa.dtype, "dy")
    need_dx = data.draw(st.booleans(), label="need_dx")
    back = lambda: F.linear_backward(dy, x, w, need_dx=need_dx, activation=relu,  # noqa: E731
                                     y=y if relu == "relu" else None)
    if np.shape(dy) != y.shape:
        expect_error(back, "dy shape")
        return
    dx, dw, db = back()
    g = np.asarray(dy, np.float64) * ((y > 0) if relu == "relu" else 1)
    if need_dx:
        assert_close(dx, g @ wa.astype(np.float64), xa.dtype)
    else:
        assert dx is None
    assert_close(dw, g.T @ xa.astype(np.float64), xa.dtype)
    assert_close(db, g.sum(axis=0), xa.dtype)


@FUZZ
@given(st.data())
def test_non_finite_values_never_crash(data):
    """NaN/inf inputs are not the kernels' business (the model rejects them), but they must
    neither crash nor read out of bounds: the shapes stay right and NaN propagates."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n, c, h, w = (data.draw(st.integers(1, 4)) for _ in range(4))
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)
    x.flat[data.draw(st.integers(0, x.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    y, argmax = F.maxpool2d(x, 1, 1, "valid")
    np.testing.assert_array_equal(y, x)
    assert argmax.min() >= 0 and argmax.max() < h * w
    wt = np.ones((2, c, 1, 1), dtype)
    out = F.conv2d(x, wt)
    assert out.shape == (n, 2, h, w) and not np.isfinite(out).all()


# ----------------------------------------------------------------------------- layers


def layer_case(data):
    """Valid constructor arguments, then (sometimes) one drawn from a wider, partly invalid set."""
    kind = data.draw(st.sampled_from(["Dense", "Conv2D", "MaxPool2D", "Flatten", "Activation", "Dropout"]))
    acts = st.sampled_from([None, "relu", "softmax", "tanh"])
    if kind == "Dense":
        args = dict(units=data.draw(st.integers(1, 5)), activation=data.draw(acts))
        wide = dict(units=st.one_of(st.integers(-1, 0), st.sampled_from(NOT_INTS)),
                    activation=st.sampled_from(["bogus", 3, "sigmoid"]))
    elif kind == "Conv2D":
        args = dict(filters=data.draw(st.integers(1, 3)), kernel_size=data.draw(valid_ints_or_pairs),
                    stride=data.draw(valid_ints_or_pairs),
                    padding=data.draw(st.one_of(st.sampled_from(["valid", "same"]), st.integers(0, 2))),
                    activation=data.draw(st.sampled_from([None, "relu", "sigmoid"])))
        wide = dict(filters=st.one_of(st.integers(-1, 0), st.sampled_from(NOT_INTS)),
                    kernel_size=ints_or_pairs, stride=ints_or_pairs, padding=conv_paddings,
                    activation=st.sampled_from(["bogus", "softmax"]))
    elif kind == "MaxPool2D":
        args = dict(size=data.draw(valid_ints_or_pairs),
                    stride=data.draw(st.one_of(st.none(), valid_ints_or_pairs)),
                    padding=data.draw(st.sampled_from(["tile", "valid", 0, 1])))
        wide = dict(size=ints_or_pairs, stride=ints_or_pairs, padding=pool_paddings)
    elif kind == "Flatten":
        args, wide = {}, {}
    elif kind == "Activation":
        args = dict(activation=data.draw(st.sampled_from(["relu", "sigmoid", "tanh", "softmax",
                                                          "leaky_relu", "identity"])))
        wide = dict(activation=st.sampled_from(["bogus", 7, None]))
    else:
        args = dict(rate=data.draw(st.floats(0, 0.9)))
        wide = dict(rate=st.one_of(st.floats(-0.5, 1.5), st.just(float("nan")), st.sampled_from(NOT_INTS)))
    if wide and data.draw(st.integers(0, 2), label="mutate an argument") == 0:
        name = data.draw(st.sampled_from(sorted(wide)), label="argument")
        args[name] = data.draw(wide[name], label=name)
    return kind, args


def layer_args_problem(kind, args):
    acts = {None, "relu", "softmax", "tanh", "sigmoid", "leaky_relu", "identity"}
    if kind == "Dense":
        if not is_int(args["units"]) or args["units"] < 1:
            return "units"
        if args["activation"] not in acts:
            return "activation"
    elif kind == "Conv2D":
        if not is_int(args["filters"]) or args["filters"] < 1:
            return "filters"
        if pair(args["kernel_size"], 1) is None or pair(args["stride"], 1) is None:
            return "kernel_size/stride"
        p = args["padding"]
        if isinstance(p, str):
            if p.lower() not in ("valid", "same"):  # one padding rule: any case, like functional
                return "padding"
        elif not (is_int(p) or isinstance(p, (tuple, list)) and len(p) in (2, 4)) or \
                explicit_pads(p) is None:
            return "padding"
        if args["activation"] not in acts or args["activation"] == "softmax":
            return "activation"
    elif kind == "MaxPool2D":
        if pair(args["size"], 1) is None:
            return "size"
        if args["stride"] is not None and pair(args["stride"], 1) is None:
            return "stride"
        p = args["padding"]
        if isinstance(p, str):
            if p.lower() not in ("tile", "valid", "same"):
                return "padding"
        elif not (is_int(p) or isinstance(p, (tuple, list)) and len(p) in (2, 4)) or \
                explicit_pads(p) is None:
            return "padding"
    elif kind == "Activation":
        if args["activation"] not in acts:
            return "activation"
    elif kind == "Dropout":
        r = args["rate"]
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real) or not 0 <= r < 1:
            return "rate"
    return None


def expected_output_shape(layer, kind, shape):
    """Per-item output shape from the documented rules, or None when ``shape`` does not fit."""
    if kind == "Dense":
        return (layer.units,) if len(shape) == 1 else None
    if kind == "Flatten":
        return (int(np.prod(shape)),)
    if kind == "Dropout":
        return shape
    if kind == "Activation":
        return None if layer.activation.name == "softmax" and len(shape) != 1 else shape
    if len(shape) != 3:
        return None
    c, h, w = shape
    numbers_ = [v for v in (layer.kernel_size if kind == "Conv2D" else layer.size) + (layer.stride or ())]
    padding = layer.padding if not isinstance(layer.padding, str) else 0
    numbers_ += list(padding) if isinstance(padding, tuple) else [padding]
    if max(numbers_) > MAX_INT:  # refused at build, before the kernels
        return None
    if kind == "Conv2D":
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        pads = conv_pads(layer.padding, kh, kw, (h, w), (sh, sw))
        oh, ow = out_size(h, kh, sh, *pads[:2]), out_size(w, kw, sw, *pads[2:])
        return None if oh is None or ow is None else (layer.filters, oh, ow)
    k = layer.size
    s = layer.stride or k
    pads = pool_pads(layer.padding, k, s, (h, w))
    if pads is None:
        return None
    oh, ow = out_size(h, k[0], s[0], *pads[:2]), out_size(w, k[1], s[1], *pads[2:])
    return None if oh is None or ow is None else (c, oh, ow)


@FUZZ
@given(st.data())
def test_layers_build_forward_backward(data):
    kind, args = layer_case(data)
    why = layer_args_problem(kind, args)
    make = lambda: getattr(layers, kind)(**args)  # noqa: E731
    if why:
        expect_error(make, f"{kind} {why}={args.get(why.split('/')[0])!r}")
        return
    layer = make()
    # build: a valid or broken item shape / dtype
    fitting = (st.tuples(st.integers(1, 12)) if kind == "Dense"
               else st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 7)))
    shape = data.draw(st.one_of(
        fitting, fitting, fitting, st.tuples(st.integers(1, 12)),
        st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 7)),
        st.tuples(st.integers(1, 3), st.integers(1, 4)),
        st.sampled_from([(0, 4, 4), (2, -1, 3), (), (1.0, 4, 4), "abc", None])), label="input_shape")
    dtype = data.draw(st.sampled_from([np.float32, np.float64] * 4 + [np.int32, "float16"]), label="dtype")
    good_shape = isinstance(shape, tuple) and len(shape) > 0 and all(is_int(d) and d >= 1 for d in shape)
    want = expected_output_shape(layer, kind, shape) if good_shape else None
    build = lambda: layer.build(shape, rng=np.random.default_rng(0), dtype=dtype)  # noqa: E731
    if not good_shape or want is None or np.dtype(dtype) not in FLOATS:
        expect_error(build, f"input_shape {shape!r} / dtype {dtype!r} do not fit {layer!r}")
        return
    assert build() == want and layer.output_shape == want
    dtype = np.dtype(dtype)
    for p, g, (_name, pshape) in zip(layer.params, layer.grads, layer.param_shapes(shape)):
        assert p.shape == g.shape == tuple(pshape) and p.dtype == dtype and np.isfinite(p).all()

    # call: a right batch, or a wrong one
    n = data.draw(st.integers(0, 3), label="N")
    xform = data.draw(st.sampled_from(["ok"] * 5 + ["dtype", "ndim", "item", "list"]), label="x form")
    x = np.random.default_rng(n).standard_normal((n,) + shape).astype(dtype)
    if xform == "dtype":
        x = x.astype(np.float32 if dtype == np.float64 else np.float64)
    elif xform == "ndim":
        x = np.zeros(shape, dtype)  # one item without the batch axis
    elif xform == "item":
        x = np.zeros((n,) + shape[:-1] + (shape[-1] + 1,), dtype)
    elif xform == "list":
        x = x.tolist()
    training = data.draw(st.booleans(), label="training")
    if xform != "ok":
        expect_error(lambda: layer.forward(x, training), f"x is {xform}-broken")
        return
    event("valid")
    out = layer.forward(x, training)
    assert out.shape == (n,) + want and out.dtype == dtype and np.isfinite(out).all()
    if not training:
        return
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    if data.draw(st.integers(0, 4)) == 0:
        bad = grad[:, ..., :0] if grad.ndim > 1 else grad[:0]
        expect_error(lambda: layer.backward(bad if bad.shape != grad.shape else grad.astype(object)),
                     "grad of the wrong shape")
        return
    dx = layer.backward(grad)
    if dx is not None:
        assert dx.shape == x.shape and dx.dtype == dtype and np.isfinite(dx).all()
    for g in layer.grads:
        assert np.isfinite(g).all()


LAYER_POOL = [
    lambda: layers.Conv2D(2, 3), lambda: layers.Conv2D(3, 2, stride=2, padding="same", activation="relu"),
    lambda: layers.Conv2D(1, (1, 3), padding=(0, 1)), lambda: layers.MaxPool2D(2),
    lambda: layers.MaxPool2D(3, stride=1, padding="valid"), lambda: layers.Flatten(),
    lambda: layers.Dense(4, activation="relu"), lambda: layers.Dropout(0.3),
    lambda: layers.Activation("tanh"), lambda: layers.Dense(3, activation="softmax"),
]


@FUZZ
@given(st.data())
def test_sequential_stacks_chain_or_fail_clearly(data):
    picks = data.draw(st.lists(st.integers(0, len(LAYER_POOL) - 1), min_size=1, max_size=5), label="stack")
    shape = data.draw(st.one_of(st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
                                st.tuples(st.integers(1, 6))), label="input_shape")
    stack = [LAYER_POOL[i]() for i in picks]
    want, ok = shape, True
    for layer, _i in zip(stack, picks):
        kind = type(layer).__name__
        want = expected_output_shape(layer, kind, want)
        if want is None:
            ok = False
            break
    make = lambda: cnn.Sequential(stack, input_shape=shape, seed=0)  # noqa: E731
    if not ok:
        exc = expect_error(make, f"the stack {picks} does not chain from {shape}")
        assert "layer" in str(exc)
        return
    event("valid")
    model = make()
    assert model.output_shape == want
    n = data.draw(st.integers(1, 3), label="N")
    x = np.random.default_rng(0).random((n,) + shape)
    out = model.predict(x)
    assert out.shape == (n,) + want and np.isfinite(out).all()
    y = np.zeros((n,) + want)
    if len(want) == 1:
        model.compile(loss="mse", optimizer="sgd")
        assert np.isfinite(model.train_step(x, y))
    else:  # the losses take (N, classes) outputs only: compile says so
        exc = expect_error(lambda: model.compile(loss="mse", optimizer="sgd"), f"output {want} is not (N, classes)")
        assert "(N, classes)" in str(exc) and f"({', '.join(map(str, ('N',) + want))})" in str(exc)
        assert not model.compiled
    bad = np.zeros((n,) + shape[:-1] + (shape[-1] + 1,))
    exc = expect_error(lambda: model.predict(bad), "x of the wrong item shape")
    assert str(bad.shape) in str(exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
