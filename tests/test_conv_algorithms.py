"""The conv algorithms besides im2col against independent oracles: Winograd F(2x2, 3x3)
(forward, input and weight gradients) and the direct one-channel 3x3 forward.

Each is forced with ``algorithm=`` so that small shapes, odd planes and every padding it accepts
are covered; ``"auto"`` is tested to pick it (and only it) where documented. Oracles: scipy's
correlate2d, cnn.reference, finite differences in float64.
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_grad, pads_conv, scipy_conv2d, scipy_conv2d_backward
from hypothesis import given, settings
from hypothesis import strategies as st

import cnn
from cnn import functional as F
from cnn import reference as R


def _scales(x, w, b, dy, pads):
    """Sums of |terms| of each product (y, dx, dw, db): the scale its rounding is judged against."""
    ys = scipy_conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), pads, (1, 1)).max()
    dxs, dws, dbs = scipy_conv2d_backward(np.abs(dy), np.abs(x), np.abs(w), pads, (1, 1))
    return ys, dxs.max(), dws.max(), dbs.max()


def _draw_arrays(problem):
    """Arrays of a drawn 3x3 problem and scipy's stride-1 forward of them (the oracle)."""
    xs, ws, padding, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    pads = pads_conv(padding, 3, 3)
    return x, w, b, padding, pads, scipy_conv2d(x, w, b, pads, (1, 1)), dtype, rng


@st.composite
def winograd_problems(draw):
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same"]),
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2), st.integers(0, 3)),
    ))
    t, b, l, r = pads_conv(padding, 3, 3)
    h = draw(st.integers(max(1, 3 - t - b), 12))   # odd and even planes, down to one output row
    w = draw(st.integers(max(1, 3 - l - r), 12))
    n, c, k = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, c, h, w), (k, c, 3, 3), padding, dtype, seed


@settings(max_examples=80, deadline=None)
@given(winograd_problems())
def test_property_forward_and_dx_match_scipy(problem):
    x, w, b, padding, pads, z, dtype, rng = _draw_arrays(problem)
    dy = rng.standard_normal(z.shape).astype(dtype)
    y_scale, dx_scale, dw_scale, db_scale = _scales(x, w, b, dy, pads)

    y = F.conv2d(x, w, b, padding=padding, algorithm="winograd")
    assert_close(y, z, dtype, scale=y_scale)
    relu = F.conv2d(x, w, b, padding=padding, activation="relu", algorithm="winograd")
    assert_close(relu, np.maximum(z, 0), dtype, scale=y_scale)
    assert (relu >= 0).all()

    edx, edw, edb = scipy_conv2d_backward(dy, x, w, pads, (1, 1))
    dx, dw, db = F.conv2d_backward(dy, x, w, padding=padding, algorithm="winograd")
    assert_close(dx, edx, dtype, scale=dx_scale)
    assert_close(dw, edw, dtype, scale=dw_scale)
    assert_close(db, edb, dtype, scale=db_scale)

    # fused ReLU: dy is masked by relu > 0 before all three products (ReLU'(0) = 0)
    masked = np.where(relu > 0, dy, 0).astype(dtype)
    mdx, mdw, mdb = F.conv2d_backward(dy, x, w, padding=padding, activation="relu", y=relu,
                                      algorithm="winograd")
    edx, edw, edb = scipy_conv2d_backward(masked, x, w, pads, (1, 1))
    assert_close(mdx, edx, dtype, scale=dx_scale)
    assert_close(mdw, edw, dtype, scale=dw_scale)
    assert_close(mdb, edb, dtype, scale=db_scale)
    none, dw2, db2 = F.conv2d_backward(dy, x, w, padding=padding, activation="relu", y=relu,
                                       need_dx=False, algorithm="winograd")
    assert none is None
    np.testing.assert_array_equal(dw2, mdw)
    np.testing.assert_array_equal(db2, mdb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding, hw", [(0, (9, 13)), (1, (8, 6)), (2, (7, 11)), ("same", (14, 14))])
def test_masked_backward_with_hostile_relu_output(rng, dtype, padding, hw):
    """The ReLU mask ``y > 0`` inside the transforms' parity split: NaN, -0.0, +0.0 and
    negative cells of ``y`` all mask, at every top/left padding, odd and even widths."""
    x = rng.standard_normal((3, 5) + hw).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    pads = pads_conv(padding, 3, 3)
    z = scipy_conv2d(x, w, None, pads, (1, 1))
    y = rng.standard_normal(z.shape).astype(dtype)
    y.flat[::5] = np.nan
    y.flat[1::7] = -0.0
    y.flat[2::9] = 0.0
    dy = rng.standard_normal(z.shape).astype(dtype)
    masked = np.where(y > 0, dy, 0).astype(dtype)
    _, dx_scale, dw_scale, db_scale = _scales(x, w, None, masked, pads)
    edx, edw, edb = scipy_conv2d_backward(masked, x, w, pads, (1, 1))
    dx, dw, db = F.conv2d_backward(dy, x, w, padding=padding, activation="relu", y=y,
                                   algorithm="winograd")
    assert np.isfinite(dx).all() and np.isfinite(dw).all() and np.isfinite(db).all()
    assert_close(dx, edx, dtype, scale=dx_scale)
    assert_close(dw, edw, dtype, scale=dw_scale)
    assert_close(db, edb, dtype, scale=db_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws", [
    ((8, 32, 14, 14), (64, 32, 3, 3)),   # the DESIGN model's second conv
    ((2, 64, 56, 56), (64, 64, 3, 3)),   # the bench's big case, two images
    ((3, 20, 9, 7), (17, 20, 3, 3)),     # odd plane and channel counts, past the auto threshold
])
def test_auto_shapes_match_reference(rng, dtype, xs, ws):
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) * 0.1).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    pads = pads_conv("same", 3, 3)
    y = F.conv2d(x, w, b, padding="same", activation="relu")
    np.testing.assert_array_equal(y, F.conv2d(x, w, b, padding="same", activation="relu",
                                              algorithm="winograd"))   # auto chose Winograd
    dy = rng.standard_normal(y.shape).astype(dtype)
    y_scale, *grad_scales = _scales(x, w, b, dy, pads)
    assert_close(y, np.maximum(R.conv2d(x64, w64, b64, padding="same"), 0), dtype, scale=y_scale)
    grads = F.conv2d_backward(dy, x, w, padding="same", activation="relu", y=y)
    forced = F.conv2d_backward(dy, x, w, padding="same", activation="relu", y=y, algorithm="winograd")
    g = np.where(y > 0, dy, 0).astype(np.float64)
    for got, same, want, scale in zip(grads, forced, R.conv2d_backward(g, x64, w64, padding="same"),
                                      grad_scales):
        np.testing.assert_array_equal(got, same)
        assert_close(got, want, dtype, scale=scale)


@pytest.mark.parametrize("xs, ws, stride, padding", [
    ((4, 1, 28, 28), (32, 1, 5, 5), 1, "same"),     # C = 1 but 5x5: neither direct nor Winograd
    ((4, 1, 28, 28), (32, 1, 3, 3), 2, "same"),     # C = 1, stride 2
    ((4, 15, 10, 10), (32, 15, 3, 3), 1, "same"),   # under the channel threshold
    ((4, 32, 5, 5), (32, 32, 3, 3), 1, "same"),     # plane under the threshold
    ((4, 32, 14, 14), (32, 32, 3, 3), 2, "same"),   # stride 2
    ((4, 32, 14, 14), (32, 32, 5, 5), 1, "same"),   # 5x5
    ((4, 32, 14, 14), (32, 32, 3, 3), 1, 3),        # top/left padding 3
])
def test_auto_keeps_im2col_elsewhere(rng, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    np.testing.assert_array_equal(y, F.conv2d(x, w, stride=stride, padding=padding,
                                              algorithm="im2col"))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for got, want in zip(F.conv2d_backward(dy, x, w, stride=stride, padding=padding),
                         F.conv2d_backward(dy, x, w, stride=stride, padding=padding,
                                           algorithm="im2col")):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("padding", ["same", "valid", (2, 0, 0, 2), (1, 3, 2, 1)])
def test_finite_differences_float64(rng, one_thread, padding):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal(F.conv2d(x, w, padding=padding).shape)

    def loss():
        return float(np.sum(F.conv2d(x, w, padding=padding, algorithm="winograd") * g))

    b = rng.standard_normal(4)

    def loss_b():
        return float(np.sum(F.conv2d(x, w, b, padding=padding, algorithm="winograd") * g))

    dx, dw, db = F.conv2d_backward(g, x, w, padding=padding, algorithm="winograd")
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db, numerical_grad(loss_b, b), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 13, 40])   # one image; partial blocks and chunks; many
def test_bit_identical_for_any_thread_count(rng, dtype, n):
    x = rng.standard_normal((n, 16, 14, 14)).astype(dtype)
    w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    old = cnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            cnn.set_num_threads(threads)
            y = F.conv2d(x, w, b, padding="same", activation="relu", algorithm="winograd")
            grads = F.conv2d_backward(y, x, w, padding="same", activation="relu", y=y,
                                      algorithm="winograd")
            results.append((y,) + grads)
    finally:
        cnn.set_num_threads(old)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


def test_float32_image_does_not_depend_on_its_batch(rng):
    """float32 Winograd: each output is one FMA chain over the channels (_wino_gemm.h), so an
    image gives the same bits alone, in a partial block or in a batch of many blocks."""
    x = rng.standard_normal((23, 12, 10, 9)).astype(np.float32)
    w = rng.standard_normal((19, 12, 3, 3)).astype(np.float32)   # 8 + 8 + a 3-row tail
    b = rng.standard_normal(19).astype(np.float32)
    y = F.conv2d(x, w, b, padding="same", activation="relu", algorithm="winograd")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = F.conv2d_backward(dy, x, w, padding="same", algorithm="winograd")[0]
    for i in (0, 6, 22):
        y1 = F.conv2d(x[i:i + 1], w, b, padding="same", activation="relu", algorithm="winograd")
        dx1 = F.conv2d_backward(dy[i:i + 1], x[i:i + 1], w, padding="same",
                                algorithm="winograd")[0]
        np.testing.assert_array_equal(y1[0], y[i])
        np.testing.assert_array_equal(dx1[0], dx[i])


def test_nan_stays_in_its_tiles(rng):
    """A NaN input reaches every output whose receptive field holds it (and may reach the other
    outputs of those 2x2 tiles: documented), never the rest of the plane."""
    x = rng.standard_normal((1, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    x[0, 3, 5, 6] = np.nan
    y = F.conv2d(x, w, padding="same", algorithm="winograd")
    direct = F.conv2d(x, w, padding="same", algorithm="im2col")
    assert np.isnan(y[:, :, 4:7, 5:8]).all()         # what the direct sum makes NaN
    assert np.isnan(direct).sum() <= np.isnan(y).sum()
    assert not np.isnan(y[:, :, :4]).any() and not np.isnan(y[:, :, 8:]).any()
    assert not np.isnan(y[:, :, :, :4]).any() and not np.isnan(y[:, :, :, 8:]).any()


# ----------------------------------------------------------------------------- direct, C = 1


@st.composite
def direct_problems(draw):
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same"]),
        st.integers(0, 3),
        st.tuples(*[st.integers(0, 4)] * 4),
    ))
    t, b, l, r = pads_conv(padding, 3, 3)
    h = draw(st.integers(max(1, 3 - t - b), 12))
    w = draw(st.integers(max(1, 3 - l - r), 12))
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 9))   # K not a multiple of 4 too
    return (n, 1, h, w), (k, 1, 3, 3), padding, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=80, deadline=None)
@given(direct_problems())
def test_property_direct_forward_matches_scipy(problem):
    x, w, b, padding, pads, z, dtype, _ = _draw_arrays(problem)
    scale = scipy_conv2d(np.abs(x), np.abs(w), np.abs(b), pads, (1, 1)).max()
    assert_close(F.conv2d(x, w, b, padding=padding, algorithm="direct"), z, dtype, scale=scale)
    assert_close(F.conv2d(x, w, padding=padding, algorithm="direct"),
                 z - b.astype(np.float64)[None, :, None, None], dtype, scale=scale)
    relu = F.conv2d(x, w, b, padding=padding, activation="relu", algorithm="direct")
    assert_close(relu, np.maximum(z, 0), dtype, scale=scale)
    assert (relu >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_picks_direct_for_one_channel_and_backward_is_im2col(rng, dtype):
    x = rng.standard_normal((9, 1, 28, 28)).astype(dtype)   # the DESIGN model's first conv
    w = rng.standard_normal((32, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    y = F.conv2d(x, w, b, padding="same", activation="relu")
    np.testing.assert_array_equal(
        y, F.conv2d(x, w, b, padding="same", activation="relu", algorithm="direct"))
    assert_close(y, np.maximum(R.conv2d(*(a.astype(np.float64) for a in (x, w, b)), padding="same"), 0),
                 dtype, scale=scipy_conv2d(np.abs(x), np.abs(w), np.abs(b), pads_conv("same", 3, 3),
                                           (1, 1)).max())
    dy = rng.standard_normal(y.shape).astype(dtype)
    for algorithm in ("auto", "direct"):
        for got, want in zip(F.conv2d_backward(dy, x, w, padding="same", activation="relu", y=y,
                                               algorithm=algorithm),
                             F.conv2d_backward(dy, x, w, padding="same", activation="relu", y=y,
                                               algorithm="im2col")):
            np.testing.assert_array_equal(got, want)


def test_direct_bit_identical_for_any_thread_count(rng):
    x = rng.standard_normal((13, 1, 20, 17)).astype(np.float32)
    w = rng.standard_normal((10, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    old = cnn.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            cnn.set_num_threads(threads)
            outs.append(F.conv2d(x, w, b, padding="same", activation="relu", algorithm="direct"))
    finally:
        cnn.set_num_threads(old)
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)


def test_bad_algorithm_errors(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    dy = np.ones((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        F.conv2d(x, w, padding="same", algorithm="fft")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        F.conv2d_backward(dy, x, w, padding="same", algorithm=None)
    with pytest.raises(ValueError, match="3x3 kernel, stride 1"):
        F.conv2d(x, w, stride=2, padding="same", algorithm="winograd")
    with pytest.raises(ValueError, match="3x3 kernel, stride 1"):
        F.conv2d(x, w[:, :, :2, :2], padding="same", algorithm="winograd")
    with pytest.raises(ValueError, match="top/left padding"):
        F.conv2d(x, w, padding=3, algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm='direct' needs one input channel"):
        F.conv2d(x, w, padding="same", algorithm="direct")
    with pytest.raises(ValueError, match="algorithm='direct' needs one input channel"):
        F.conv2d(x[:, :1], w[:, :1], stride=2, algorithm="direct")
