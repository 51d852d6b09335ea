"""cnn.functional.conv2d / conv2d_backward against scipy.signal, cnn.reference and finite differences."""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_grad, pads_conv, scipy_conv2d, scipy_conv2d_backward
from hypothesis import given, settings
from hypothesis import strategies as st

import cnn
from cnn import functional as F
from cnn import reference as R

# (x shape, w shape, stride, padding)
CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, "valid"),
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, "same"),
    ((1, 2, 6, 7), (3, 2, 2, 2), 1, "same"),          # even kernel: pad bottom/right only
    ((2, 2, 8, 8), (2, 2, 4, 2), 1, "same"),
    ((3, 1, 9, 9), (5, 1, 5, 5), 1, "same"),          # C = 1 (a first layer)
    ((2, 4, 5, 5), (3, 4, 1, 1), 1, "valid"),         # 1x1
    ((2, 3, 9, 8), (2, 3, 3, 3), 2, "valid"),
    ((2, 3, 9, 8), (2, 3, 3, 3), 2, "same"),          # TF rule: (1, 1, 0, 1) here
    ((1, 2, 10, 9), (2, 2, 3, 2), 3, 1),
    ((1, 2, 7, 7), (2, 2, 3, 3), (2, 1), (1, 2)),
    ((2, 2, 5, 6), (3, 2, 2, 3), (1, 3), (0, 2, 1, 0)),
    ((1, 3, 4, 4), (2, 3, 6, 5), 1, (1, 1, 0, 1)),    # kernel == padded input: 1x1 output
    ((2, 2, 3, 3), (2, 2, 3, 3), 1, "valid"),         # kernel == input
    ((1, 1, 3, 3), (1, 1, 3, 3), 2, "same"),
]


def _s(stride):
    return (stride, stride) if isinstance(stride, int) else tuple(stride)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding", CASES)
def test_forward_matches_correlate2d(rng, dtype, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    pads = pads_conv(padding, ws[2], ws[3], xs[2:], stride)
    expected = scipy_conv2d(x, w, b, pads, _s(stride))
    assert_close(F.conv2d(x, w, b, stride=stride, padding=padding), expected, dtype)
    assert_close(F.conv2d(x, w, stride=stride, padding=padding),
                 expected - b.astype(np.float64)[None, :, None, None], dtype)
    y = F.conv2d(x, w, b, stride=stride, padding=padding, activation="relu")
    assert_close(y, np.maximum(expected, 0.0), dtype, scale=np.abs(expected).max())
    assert (y >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding", CASES)
def test_backward_matches_scipy(rng, dtype, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    edx, edw, edb = scipy_conv2d_backward(dy, x, w, pads_conv(padding, ws[2], ws[3], xs[2:], stride),
                                          _s(stride))
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=stride, padding=padding)
    assert_close(dx, edx, dtype)
    assert_close(dw, edw, dtype)
    # db is a plain sum over (n, p): its float32 rounding scales with sum |dy|, not with |db|
    # (which cancellation can make tiny), so that is the scale of its tolerance.
    assert_close(db, edb, dtype, scale=max(np.abs(edb).max(), np.abs(dy).sum(axis=(0, 2, 3)).max()))
    none, dw2, db2 = F.conv2d_backward(dy, x, w, stride=stride, padding=padding, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mnist_sized_layer_matches_reference(rng, dtype):
    # the shapes of the DESIGN example's second conv (enough work for every code path and thread)
    x = rng.standard_normal((8, 32, 14, 14)).astype(dtype)
    w = (rng.standard_normal((16, 32, 3, 3)) * 0.1).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y = F.conv2d(x, w, b, padding="same")
    assert_close(y, R.conv2d(x64, w64, b64, padding="same"), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(F.conv2d_backward(dy, x, w, padding="same"),
                         R.conv2d_backward(dy.astype(np.float64), x64, w64, padding="same")):
        assert_close(got, want, dtype)


# ----------------------------------------------------------------------------- the seed's example


def test_seed_example_exact_with_and_without_relu():
    """Seed eq. 5-8: 3x3 input, 2x2 filters, 3 outputs, p = 1 on the bottom/right only."""
    i = np.array([[2.0, -3.0, 5.0], [7.0, 11.0, -13.0], [17.0, 19.0, 23.0]])
    f = np.array([[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 1.0]], [[0.5, -2.0], [3.0, -0.25]]])
    for dtype in DTYPES:
        x, w = i[None, None].astype(dtype), f[:, None].astype(dtype)
        z = F.conv2d(x, w, padding="same")
        y = F.conv2d(x, w, padding="same", activation="relu")
        assert z.shape == y.shape == (1, 3, 3, 3)
        for n in range(3):
            F_ = f[n]
            o21 = i[1, 0] * F_[0, 0] + i[1, 1] * F_[0, 1] + i[2, 0] * F_[1, 0] + i[2, 1] * F_[1, 1]
            assert z[0, n, 1, 0] == o21                   # small integers and halves: exact
            assert y[0, n, 1, 0] == max(o21, 0.0)
            assert z[0, n, 2, 2] == i[2, 2] * F_[0, 0]    # only I33 is real in the last window
        assert (z < 0).any()
        np.testing.assert_array_equal(y, np.maximum(z, 0))


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize(
    "xs, ws, stride, padding",
    [
        ((2, 2, 5, 4), (3, 2, 3, 2), 1, "same"),
        ((1, 2, 6, 7), (2, 2, 3, 3), 2, (0, 2, 1, 0)),
        ((2, 1, 5, 5), (2, 1, 2, 2), (2, 1), "valid"),
        ((1, 3, 4, 4), (2, 3, 4, 4), 1, 1),
    ],
)
def test_backward_finite_differences_float64(rng, one_thread, xs, ws, stride, padding):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    g = rng.standard_normal(F.conv2d(x, w, b, stride, padding).shape)

    def loss():
        return float(np.sum(F.conv2d(x, w, b, stride, padding) * g))

    dx, dw, db = F.conv2d_backward(g, x, w, stride, padding)
    # the loss is linear in each argument: central differences are exact up to rounding
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- properties


@st.composite
def conv_problems(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same"]),
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(*[st.integers(0, 3)] * 4),
    ))
    t, b, l, r = pads_conv(padding, kh, kw)
    # from "kernel == padded input" (1 output row) up to a few more rows
    h = draw(st.integers(max(1, kh - t - b), max(1, kh - t - b) + 6))
    w = draw(st.integers(max(1, kw - l - r), max(1, kw - l - r) + 6))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, c, h, w), (k, c, kh, kw), stride, padding, dtype, seed


@settings(max_examples=60, deadline=None)
@given(conv_problems())
def test_property_forward_backward_vs_scipy_and_reference(problem):
    xs, ws, stride, padding, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    pads = pads_conv(padding, ws[2], ws[3], xs[2:], stride)
    # Every product is a sum whose float rounding scales with the sum of |terms|, not with
    # |result| (cancellation can make that tiny): the same oracle on |x|, |w|, |dy| gives it.
    ax, aw, ab = np.abs(x), np.abs(w), np.abs(b)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    ey = scipy_conv2d(x, w, b, pads, _s(stride))
    y_scale = scipy_conv2d(ax, aw, ab, pads, _s(stride)).max()
    assert_close(y, ey, dtype, scale=y_scale)
    assert_close(y, R.conv2d(*(a.astype(np.float64) for a in (x, w, b)), stride=stride, padding=padding),
                 dtype, scale=y_scale)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=stride, padding=padding)
    edx, edw, edb = scipy_conv2d_backward(dy, x, w, pads, _s(stride))
    adx, adw, _ = scipy_conv2d_backward(np.abs(dy), ax, aw, pads, _s(stride))
    assert_close(dx, edx, dtype, scale=adx.max())
    assert_close(dw, edw, dtype, scale=adw.max())
    # db is a plain sum over (n, p): its float32 rounding scales with sum |dy|, not with |db|
    # (which cancellation can make tiny), so that is the scale of its tolerance.
    assert_close(db, edb, dtype, scale=max(np.abs(edb).max(), np.abs(dy).sum(axis=(0, 2, 3)).max()))


# ----------------------------------------------------------------------------- determinism, layout


def test_repeated_calls_are_bit_identical(rng):
    x = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    y1 = F.conv2d(x, w, b, padding="same", activation="relu")
    y2 = F.conv2d(x, w, b, padding="same", activation="relu")
    np.testing.assert_array_equal(y1, y2)
    g1 = F.conv2d_backward(y1, x, w, padding="same")
    g2 = F.conv2d_backward(y1, x, w, padding="same")
    for a, c in zip(g1, g2):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding", [
    ((16, 3, 10, 10), (8, 3, 3, 3), 1, "same"),
    ((9, 1, 12, 11), (4, 1, 5, 5), 2, "valid"),     # odd batch, C = 1
    ((32, 8, 7, 7), (6, 8, 2, 2), 1, "same"),
    ((40, 16, 14, 14), (32, 16, 3, 3), 1, "same"),  # big enough for functional to use 2 threads
])
def test_results_do_not_depend_on_thread_count(rng, dtype, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    old = cnn.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            cnn.set_num_threads(n)
            y = F.conv2d(x, w, b, stride=stride, padding=padding)
            results.append((y,) + F.conv2d_backward(y, x, w, stride=stride, padding=padding))
    finally:
        cnn.set_num_threads(old)
    assert cnn.get_num_threads() == old
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)   # bit-identical, dw and db included


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_inputs_give_the_right_answer(rng, dtype):
    x = rng.standard_normal((3, 6, 9, 16)).astype(dtype)[:, ::2, :, ::-2]   # (3, 3, 9, 8) view
    w = np.asfortranarray(rng.standard_normal((2, 3, 3, 2)).astype(dtype))
    b = rng.standard_normal(4).astype(dtype)[::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or b.flags.c_contiguous)
    pads = pads_conv("same", 3, 2)
    y = F.conv2d(x, w, b, padding="same")
    assert_close(y, scipy_conv2d(x, w, b, pads, (1, 1)), dtype)
    dy = rng.standard_normal((y.shape[0], y.shape[1], y.shape[2], 2 * y.shape[3])).astype(dtype)[..., ::2]
    for got, want in zip(F.conv2d_backward(dy, x, w, padding="same"),
                         scipy_conv2d_backward(dy, x, w, pads, (1, 1))):
        assert_close(got, want, dtype)


def test_outputs_keep_dtype_and_shape(rng):
    for dtype in DTYPES:
        x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
        w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
        y = F.conv2d(x, w, stride=2, padding="same")
        assert y.dtype == dtype and y.shape == (2, 4, 4, 4) and y.flags.c_contiguous
        dx, dw, db = F.conv2d_backward(y, x, w, stride=2, padding="same")
        assert (dx.dtype, dw.dtype, db.dtype) == (np.dtype(dtype),) * 3
        assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, (4,))


# ----------------------------------------------------------------------------- bad input


def _a(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


X, W = (1, 2, 5, 5), (3, 2, 3, 3)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.conv2d(_a((2, 5, 5)), _a(W)), ValueError, r"x must be 4-D.*\(2, 5, 5\)"),
        (lambda: F.conv2d(_a(X), _a((3, 3, 3))), ValueError, r"w must be 4-D.*\(3, 3, 3\)"),
        (lambda: F.conv2d(_a(X), _a((3, 4, 3, 3))), ValueError, r"w has 4 input channels.*x has 2"),
        (lambda: F.conv2d(_a(X), _a((3, 2, 6, 3))), ValueError, r"larger than the padded input.*5"),
        (lambda: F.conv2d(_a(X), _a((3, 2, 3, 8)), padding=(0, 1)), ValueError, r"larger than the padded input.*7"),
        (lambda: F.conv2d(_a(X), _a(W), stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: F.conv2d(_a(X), _a(W), stride=-1), ValueError, r"stride must be >= 1, got -1"),
        (lambda: F.conv2d(_a(X), _a(W), stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
        (lambda: F.conv2d(_a(X), _a(W), stride=1.5), TypeError, r"stride must be an int.*1\.5"),
        (lambda: F.conv2d(_a(X), _a(W), padding="full"), ValueError, r"padding must be one of \['valid', 'same'\].*'full'"),
        (lambda: F.conv2d(_a(X), _a(W), padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (lambda: F.conv2d(_a(X), _a(W), padding=(1, -2)), ValueError, r"padding must be >= 0, got \(1, -2\)"),
        (lambda: F.conv2d(_a(X), _a(W), padding=(1, 1, 1)), ValueError, r"padding .*length 3"),
        (lambda: F.conv2d(_a(X), _a(W), activation="tanh"), ValueError, r"activation must be None or 'relu', got 'tanh'"),
        (lambda: F.conv2d(_a(X, np.int64), _a(W)), TypeError, r"x must have dtype float32 or float64, got int64"),
        (lambda: F.conv2d(_a(X, np.float16), _a(W, np.float16)), TypeError, r"x must have dtype float32 or float64, got float16"),
        (lambda: F.conv2d(_a(X), _a(W, np.int32)), TypeError, r"w must have dtype float32 or float64, got int32"),
        (lambda: F.conv2d(_a(X), _a(W, np.float64)), TypeError, r"w has dtype float64 but the input has dtype float32"),
        (lambda: F.conv2d(_a(X), _a(W), _a(3, np.float64)), TypeError, r"b has dtype float64.*float32"),
        (lambda: F.conv2d(_a(X), _a(W), _a(2)), ValueError, r"b must have shape \(3,\).*got \(2,\)"),
        (lambda: F.conv2d(_a(X), _a(W), _a((3, 1))), ValueError, r"b must be 1-D.*\(3, 1\)"),
        (lambda: F.conv2d_backward(_a((1, 3, 3, 4)), _a(X), _a(W)), ValueError, r"dy must have the conv output's shape \(1, 3, 3, 3\), got \(1, 3, 3, 4\)"),
        (lambda: F.conv2d_backward(_a((1, 2, 3, 3)), _a(X), _a(W)), ValueError, r"dy must have the conv output's shape \(1, 3, 3, 3\)"),
        (lambda: F.conv2d_backward(_a((1, 3, 3, 3), np.float64), _a(X), _a(W)), TypeError, r"dy has dtype float64.*float32"),
        (lambda: F.conv2d_backward(_a((3, 3, 3)), _a(X), _a(W)), ValueError, r"dy must be 4-D"),
        (lambda: F.conv2d_backward(_a((1, 3, 3, 3)), _a(X), _a((3, 1, 3, 3))), ValueError, r"w has 1 input channels.*x has 2"),
        (lambda: F.conv2d_backward(_a((1, 3, 3, 3)), _a(X), _a(W), stride=0), ValueError, r"stride must be >= 1"),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ws, stride, padding", [
    ((4, 3, 3, 3), 1, "same"),
    ((4, 3, 2, 3), 2, (1, 0, 2, 1)),
    ((4, 3, 1, 1), 1, "valid"),          # the 1x1 direct path
])
def test_fused_relu_backward_equals_masking_dy_first(rng, dtype, ws, stride, padding):
    x = rng.standard_normal((5, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = F.conv2d(x, w, b, stride, padding, activation="relu")
    z = F.conv2d(x, w, b, stride, padding)
    np.testing.assert_array_equal(y, np.maximum(z, 0))
    g = rng.standard_normal(y.shape).astype(dtype)
    unfused = F.conv2d_backward(np.where(z > 0, g, 0).astype(dtype), x, w, stride, padding)
    fused = F.conv2d_backward(g, x, w, stride, padding, activation="relu", y=y)
    for one, two in zip(unfused, fused):
        np.testing.assert_array_equal(one, two)


def test_fused_relu_backward_needs_the_forward_output(rng):
    x = rng.standard_normal((2, 1, 5, 5))
    w = rng.standard_normal((3, 1, 3, 3))
    y = F.conv2d(x, w, activation="relu")
    with pytest.raises(ValueError, match="needs y"):
        F.conv2d_backward(y, x, w, activation="relu")
    with pytest.raises(ValueError, match="y must have the conv output's shape"):
        F.conv2d_backward(y, x, w, activation="relu", y=y[:, :2])
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        F.conv2d_backward(y, x, w, activation="tanh", y=y)


def test_fused_relu_propagates_nan_like_np_maximum():
    x = np.ones((1, 1, 3, 3))
    x[0, 0, 1, 1] = np.nan
    w = np.ones((1, 1, 1, 1))
    y = F.conv2d(x, w, activation="relu")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    xf, w2 = x.reshape(1, 9), np.full((2, 9), -1.0)
    y = F.linear(xf, w2, activation="relu")
    assert np.isnan(y).all() and np.isnan(np.maximum(xf @ w2.T, 0)).all()


@pytest.mark.parametrize("H, W", [(1, 1), (1, 5), (4, 1), (2, 3), (7, 6)])
@pytest.mark.parametrize("kh, kw", [(1, 1), (2, 2), (3, 3), (4, 5), (5, 2)])
def test_same_padding_stride_one_every_edge_case_matches_reference(rng, H, W, kh, kw):
    # The stride-1 'same' path copies whole spans and patches the wrapped edge cells:
    # small planes and kernels larger than the plane exercise every patch.
    x = rng.standard_normal((2, 3, H, W))
    w = rng.standard_normal((2, 3, kh, kw))
    y = F.conv2d(x, w, padding="same")
    np.testing.assert_allclose(y, R.conv2d(x, w, padding="same"), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    for got, want in zip(F.conv2d_backward(dy, x, w, padding="same"),
                         R.conv2d_backward(dy, x, w, padding="same")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
