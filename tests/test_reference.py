"""cnn.reference against scipy.signal, a per-window loop, finite differences and the seed's examples."""

import numpy as np
import pytest
from conftest import (
    DTYPES,
    assert_close,
    distinct_values,
    naive_maxpool,
    naive_maxpool_backward,
    numerical_grad,
    pads_conv,
    pads_pool,
    scipy_conv2d,
    scipy_conv2d_backward,
)

from cnn import reference as R

# (x shape, w shape, stride, padding)
CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, "valid"),
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, "same"),
    ((1, 2, 6, 7), (3, 2, 2, 2), 1, "same"),          # even kernel: pad 0 top/left, 1 bottom/right
    ((2, 2, 8, 8), (2, 2, 4, 2), 1, "same"),          # non-square even kernel
    ((2, 1, 5, 5), (3, 1, 1, 1), 1, "valid"),         # 1x1
    ((2, 3, 9, 8), (2, 3, 3, 3), 2, "valid"),
    ((2, 3, 9, 8), (2, 3, 3, 3), 2, "same"),          # total k-1 whatever the stride
    ((1, 2, 10, 9), (2, 2, 3, 2), 3, 1),
    ((1, 2, 7, 7), (2, 2, 3, 3), (2, 1), (1, 2)),
    ((2, 2, 5, 6), (3, 2, 2, 3), (1, 3), (0, 2, 1, 0)),
    ((1, 3, 4, 4), (2, 3, 6, 5), 1, (1, 1, 0, 1)),    # kernel == padded input: a 1x1 output
    ((1, 1, 3, 3), (1, 1, 3, 3), 2, "same"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_matches_correlate2d(rng, dtype, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    s = (stride, stride) if isinstance(stride, int) else stride
    expected = scipy_conv2d(x, w, b, pads_conv(padding, ws[2], ws[3], xs[2:], s), s)
    assert_close(R.conv2d(x, w, b, stride=stride, padding=padding), expected, dtype)
    assert_close(R.conv2d(x, w, None, stride=stride, padding=padding),
                 expected - b.astype(np.float64)[None, :, None, None], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_backward_matches_scipy(rng, dtype, xs, ws, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = R.conv2d(x, w, stride=stride, padding=padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    s = (stride, stride) if isinstance(stride, int) else stride
    edx, edw, edb = scipy_conv2d_backward(dy, x, w, pads_conv(padding, ws[2], ws[3], xs[2:], s), s)
    dx, dw, db = R.conv2d_backward(dy, x, w, stride=stride, padding=padding)
    assert_close(dx, edx, dtype)
    assert_close(dw, edw, dtype)
    assert_close(db, edb, dtype)


@pytest.mark.parametrize("stride", [2, 3, (2, 3)])
@pytest.mark.parametrize("padding", ["valid", "same", (2, 0, 1, 1)])
def test_strided_conv_is_subsampled_stride1(rng, stride, padding):
    x = rng.standard_normal((2, 2, 11, 10))
    w = rng.standard_normal((3, 2, 3, 4))
    s = (stride, stride) if isinstance(stride, int) else stride
    # "same" pads by the stride (TF rule): compare with stride 1 on those explicit pads
    y1 = R.conv2d(x, w, padding=R.pad_amounts(padding, (3, 4), s, (11, 10)))
    ys = R.conv2d(x, w, stride=stride, padding=padding)
    np.testing.assert_allclose(ys, y1[:, :, :: s[0], :: s[1]], rtol=1e-12, atol=1e-12)


def test_same_padding_keeps_size_at_stride1_and_gives_ceil_at_stride_s(rng):
    x = rng.standard_normal((1, 1, 9, 10))
    for k in (1, 2, 3, 4, 5):
        assert R.conv2d(x, np.ones((1, 1, k, k)), padding="same").shape == (1, 1, 9, 10)
        # ceil(H / s) outputs (TF rule)
        assert R.conv2d(x, np.ones((1, 1, k, k)), stride=2, padding="same").shape == (1, 1, 5, 5)
        assert R.conv2d(x, np.ones((1, 1, k, k)), stride=3, padding="same").shape == (1, 1, 3, 4)


@pytest.mark.parametrize(
    "padding, k, expected",
    [
        ("valid", 3, (0, 0, 0, 0)),
        ("same", 1, (0, 0, 0, 0)),
        ("same", 2, (0, 1, 0, 1)),
        ("same", 3, (1, 1, 1, 1)),
        ("same", 4, (1, 2, 1, 2)),
        ("same", (5, 2), (2, 2, 0, 1)),
        (2, 3, (2, 2, 2, 2)),
        ((1, 3), 3, (1, 1, 3, 3)),
        ((0, 1, 2, 3), 3, (0, 1, 2, 3)),
    ],
)
def test_pad_amounts(padding, k, expected):
    assert R.pad_amounts(padding, k) == expected


@pytest.mark.parametrize(
    "padding, size, hw, expected",
    [
        ("tile", 2, (3, 3), (0, 1, 0, 1)),   # the seed's example
        ("tile", 3, (5, 5), (0, 1, 0, 1)),   # NOTES 8: 1, not the seed's 5 % 3 = 2
        ("tile", 3, (4, 8), (1, 1, 0, 1)),
        ("TILE", 3, (4, 8), (1, 1, 0, 1)),
        ("tile", 2, (4, 6), (0, 0, 0, 0)),
        ("tile", 4, (3, 1), (0, 1, 1, 2)),
        ("tile", (2, 3), (3, 3), (0, 1, 0, 0)),
        ("valid", 3, (5, 5), (0, 0, 0, 0)),
        (1, 2, (5, 5), (1, 1, 1, 1)),
        ((0, 1, 1, 0), 2, (5, 5), (0, 1, 1, 0)),
    ],
)
def test_pool_pad_amounts(padding, size, hw, expected):
    assert R.pool_pad_amounts(padding, size, hw) == expected


@pytest.mark.parametrize(
    "size, stride, hw, expected",
    [
        (3, 2, (6, 7), (0, 1, 0, 0)),   # 6 + 1 = 7 = 3 + 2 * 2; 7 = 3 + 2 * 2 already
        (3, 1, (5, 4), (0, 0, 0, 0)),   # stride 1 always tiles
        (4, 3, (2, 9), (1, 1, 0, 1)),   # H < window: filled up (4 - 2); W: 9 + 1 = 4 + 2 * 3
        ((3, 2), (2, 2), (4, 4), (0, 1, 0, 0)),
    ],
)
def test_pool_tile_padding_with_overlapping_windows(size, stride, hw, expected):
    assert R.pool_pad_amounts("tile", size, hw, stride) == expected


# ----------------------------------------------------------------------------- the seed's examples


def test_seed_conv_example_exact():
    """Seed eq. 5-8: 3x3 input, 2x2 filters, 3 outputs, p = 1 all on the bottom/right."""
    i = np.array([[2.0, -3.0, 5.0], [7.0, 11.0, -13.0], [17.0, 19.0, 23.0]])  # I_{r,c} = i[r-1, c-1]
    f = np.array([[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 1.0]], [[0.5, -2.0], [3.0, -0.25]]])
    x = i[None, None]
    w = f[:, None]
    y = R.conv2d(x, w, padding="same")
    assert y.shape == (1, 3, 3, 3)
    for n in range(3):
        F = f[n]
        # O_{2,1} = I21 F11 + I22 F12 + I31 F21 + I32 F22 (before ReLU)
        assert y[0, n, 1, 0] == i[1, 0] * F[0, 0] + i[1, 1] * F[0, 1] + i[2, 0] * F[1, 0] + i[2, 1] * F[1, 1]
        # O_{1,1} reads no padding; O_{3,3} reads I33 only (the zero row and column, eq. 7)
        assert y[0, n, 0, 0] == i[0, 0] * F[0, 0] + i[0, 1] * F[0, 1] + i[1, 0] * F[1, 0] + i[1, 1] * F[1, 1]
        assert y[0, n, 2, 2] == i[2, 2] * F[0, 0]
        assert y[0, n, 0, 2] == i[0, 2] * F[0, 0] + i[1, 2] * F[1, 0]
    # some outputs are negative: nothing was rectified
    assert (y < 0).any()


def test_seed_pool_example():
    """Seed eq. 15-16: 3x3 input, 2x2 window, stride 2, one padding row/column bottom/right."""
    i = np.array([[[[1.0, 9.0, 4.0], [3.0, 2.0, 8.0], [6.0, 5.0, 7.0]]]])
    y, idx = R.maxpool2d(i, 2)
    assert y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y[0, 0], [[max(1, 9, 3, 2), max(4, 8)], [max(6, 5), 7]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 5], [6, 8]])
    assert idx.dtype == np.intp


def test_seed_pool_example_negative_inputs_padding_never_wins():
    i = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative; the seed's zero padding would win
    y, idx = R.maxpool2d(i, 2)
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -3.0], [-7.0, -9.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [6, 8]])


def test_notes8_five_by_three_pads_one_not_two(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    y, idx = R.maxpool2d(x, 3)
    assert y.shape == (1, 2, 2, 2)  # 5 + 1 = 6 = 2 windows of 3 (with 2 it would not tile)
    ey, eidx = naive_maxpool(x, (3, 3), (3, 3), (0, 1, 0, 1))
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    np.testing.assert_array_equal(y[:, :, 0, 0], x[:, :, :3, :3].max(axis=(2, 3)))
    np.testing.assert_array_equal(y[:, :, 1, 1], x[:, :, 3:, 3:].max(axis=(2, 3)))


# ----------------------------------------------------------------------------- max-pool


POOL_CASES = [
    # (x shape, size, stride, padding)
    ((2, 3, 6, 6), 2, None, "tile"),
    ((2, 3, 7, 5), 2, None, "tile"),
    ((1, 2, 7, 8), 3, None, "tile"),
    ((2, 2, 7, 9), (2, 3), None, "tile"),       # non-square window
    ((1, 2, 7, 7), 3, 2, "valid"),              # overlapping windows
    ((1, 2, 8, 7), (3, 2), (1, 2), "tile"),     # overlapping rows only
    ((1, 2, 6, 6), 3, 2, 1),
    ((1, 1, 5, 6), (3, 2), (2, 1), (2, 0, 1, 1)),
    ((2, 2, 6, 9), 3, 2, "tile"),               # overlapping + tile: pads 1 row, 0 columns
    ((1, 2, 6, 5), (4, 3), (3, 1), "tile"),
    ((1, 1, 2, 3), 4, None, "tile"),            # window larger than the input
    ((2, 1, 4, 4), 1, None, "tile"),            # 1x1 window: identity
    ((1, 1, 5, 5), 2, 3, "valid"),              # stride > size: cells skipped
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, size, stride, padding", POOL_CASES)
def test_maxpool_matches_window_loop(rng, dtype, xs, size, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    k = (size, size) if isinstance(size, int) else size
    s = k if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    pads = pads_pool(padding, k[0], k[1], xs[2], xs[3], *s)
    ey, eidx = naive_maxpool(x, k, s, pads)
    y, idx = R.maxpool2d(x, size, stride, padding)
    # "tile" (at stride <= size) leaves no input row or column out of every window
    if padding == "tile":
        seen = np.zeros(xs[2:], bool)
        for a in range(y.shape[2]):
            for b in range(y.shape[3]):
                rows = np.arange(a * s[0], a * s[0] + k[0]) - pads[0]
                cols = np.arange(b * s[1], b * s[1] + k[1]) - pads[2]
                seen[np.ix_(rows[(rows >= 0) & (rows < xs[2])], cols[(cols >= 0) & (cols < xs[3])])] = True
        assert seen.all()
    assert y.dtype == dtype and idx.dtype == np.intp
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(idx, eidx)
    # the winner really is the value: y == x.flat[argmax] in every plane
    np.testing.assert_array_equal(np.take_along_axis(x.reshape(xs[0], xs[1], -1), idx.reshape(xs[0], xs[1], -1), 2),
                                  y.reshape(xs[0], xs[1], -1))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = R.maxpool2d_backward(dy, idx, x.shape)
    assert dx.dtype == dtype
    assert_close(dx, naive_maxpool_backward(dy, eidx, x.shape), dtype)


def test_maxpool_ties_go_to_first_cell():
    x = np.zeros((1, 2, 4, 4))
    x[0, 1] = 3.5  # all-equal, non-zero
    y, idx = R.maxpool2d(x, 2)
    np.testing.assert_array_equal(y, x[:, :, ::2, ::2])
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])  # top-left cell of each window
    np.testing.assert_array_equal(idx[0, 1], [[0, 2], [8, 10]])
    # a tie between the 2nd and 4th cells goes to the 2nd
    x = np.array([[[[1.0, 5.0], [2.0, 5.0]]]])
    assert R.maxpool2d(x, 2)[1].item() == 1
    # gradient goes to one cell only
    dx = R.maxpool2d_backward(np.ones((1, 1, 1, 1)), R.maxpool2d(x, 2)[1], x.shape)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_maxpool_all_negative_with_padding_on_top_left():
    x = -1.0 - np.arange(9.0).reshape(1, 1, 3, 3)
    y, idx = R.maxpool2d(x, 2, padding=(1, 0, 1, 0))  # padding in the first row/column
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_maxpool_minus_inf_inputs_still_have_a_real_argmax():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = R.maxpool2d(x, 2)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [6, 8]])


def test_maxpool_nan_propagates_to_first_nan():
    x = np.array([[[[1.0, np.nan, 5.0, 2.0], [np.nan, 0.0, 1.0, np.nan]]]])
    y, idx = R.maxpool2d(x, 2)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(idx[0, 0], [[1, 7]])


def test_maxpool_backward_accumulates_overlapping_windows():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the centre wins all four 2x2 windows of stride 1
    y, idx = R.maxpool2d(x, 2, stride=1, padding="valid")
    assert np.all(idx == 4)
    dx = R.maxpool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), idx, x.shape)
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize(
    "xs, ws, stride, padding",
    [
        ((2, 2, 5, 4), (3, 2, 3, 2), 1, "same"),
        ((1, 2, 6, 7), (2, 2, 3, 3), 2, (0, 2, 1, 0)),
        ((2, 1, 5, 5), (2, 1, 2, 2), (2, 1), "valid"),
    ],
)
def test_conv_backward_finite_differences(rng, xs, ws, stride, padding):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    g = rng.standard_normal(R.conv2d(x, w, b, stride, padding).shape)

    def loss():
        return float(np.sum(R.conv2d(x, w, b, stride, padding) * g))

    dx, dw, db = R.conv2d_backward(g, x, w, stride, padding)
    # the loss is linear in each argument: central differences are exact up to rounding
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(
    "xs, size, stride, padding",
    [((2, 2, 5, 5), 2, None, "tile"), ((1, 2, 7, 6), 3, 2, "valid"), ((1, 1, 6, 7), (2, 3), (1, 2), (1, 0, 2, 1))],
)
def test_pool_backward_finite_differences(rng, xs, size, stride, padding):
    x = distinct_values(rng, xs)
    y, idx = R.maxpool2d(x, size, stride, padding)
    g = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(R.maxpool2d(x, size, stride, padding)[0] * g))

    np.testing.assert_allclose(R.maxpool2d_backward(g, idx, x.shape), numerical_grad(loss, x, eps=1e-4),
                               rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- misc behaviour


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_kept_and_noncontiguous_inputs(rng, dtype):
    x = rng.standard_normal((2, 6, 9, 8)).astype(dtype)[:, ::2, :, ::-1]  # non-contiguous view
    w = np.asfortranarray(rng.standard_normal((2, 3, 3, 3)).astype(dtype))
    y = R.conv2d(x, w, padding="same")
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, scipy_conv2d(x, w, None, (1, 1, 1, 1), (1, 1)), dtype)
    dx, dw, db = R.conv2d_backward(y, x, w, padding="same")
    assert dx.dtype == dw.dtype == db.dtype == dtype
    p, idx = R.maxpool2d(x, 2)
    assert p.dtype == dtype
    np.testing.assert_array_equal(p, R.maxpool2d(np.ascontiguousarray(x), 2)[0])


def test_torch_agrees(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    y = R.conv2d(x, w, b, stride=2, padding=1)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    for ours, theirs in zip(R.conv2d_backward(g, x, w, 2, 1), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)
    xp = distinct_values(rng, (2, 3, 7, 7))
    py, pidx = R.maxpool2d(xp, 3, 2, 1)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(xp), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(py, ty.numpy())
    np.testing.assert_array_equal(pidx, tidx.numpy())


# ----------------------------------------------------------------------------- bad input


def _x(shape=(1, 2, 5, 5), dtype=np.float64):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: R.conv2d(_x((2, 5, 5)), _x((1, 2, 3, 3))), ValueError, r"x must be 4-D; got shape \(2, 5, 5\)"),
        (lambda: R.conv2d(_x(), _x((2, 3, 3)), ), ValueError, r"w must be 4-D"),
        (lambda: R.conv2d(_x(), _x((1, 3, 3, 3))), ValueError, r"input channels.*C=2.*C=3"),
        (lambda: R.conv2d(_x(), _x((1, 2, 6, 3))), ValueError, r"kernel \(6, 3\) is larger than the padded input \(5, 5\)"),
        (lambda: R.conv2d(_x(), _x((1, 2, 6, 3)), padding=(0, 1)), ValueError, r"larger than the padded"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), stride=0), ValueError, r"stride must be >= 1; got 0"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), stride=-2), ValueError, r"stride must be >= 1"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), stride=1.5), TypeError, r"stride must be an int.*1\.5"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), padding="full"), ValueError, r"padding must be .*'full'"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), padding=-1), ValueError, r"padding must be >= 0.*-1"),
        (lambda: R.conv2d(_x(), _x((1, 2, 3, 3)), padding=(1, 2, 3)), ValueError, r"padding .* 3 entries"),
        (lambda: R.conv2d(_x(dtype=np.int32), _x((1, 2, 3, 3))), TypeError, r"x must have dtype float32 or float64; got dtype int32"),
        (lambda: R.conv2d(_x(dtype=np.float16), _x((1, 2, 3, 3))), TypeError, r"x .*float16"),
        (lambda: R.conv2d(_x(dtype=np.float32), _x((1, 2, 3, 3))), TypeError, r"w must have the same dtype as x \(float32\); got dtype float64"),
        (lambda: R.conv2d(_x(), _x((3, 2, 3, 3)), b=np.zeros(2)), ValueError, r"b must have shape \(3,\).*\(2,\)"),
        (lambda: R.conv2d_backward(_x((1, 1, 3, 4)), _x(), _x((1, 2, 3, 3))), ValueError, r"dy must have the shape .*\(1, 1, 3, 3\); got shape \(1, 1, 3, 4\)"),
        (lambda: R.maxpool2d(_x((5, 5))), ValueError, r"x must be 4-D"),
        (lambda: R.maxpool2d(_x(), 0), ValueError, r"size must be >= 1"),
        (lambda: R.maxpool2d(_x(), 2, stride=0), ValueError, r"stride must be >= 1"),
        (lambda: R.maxpool2d(_x(), 2, padding="same"), ValueError, r"padding must be 'tile'.*'same'"),
        (lambda: R.maxpool2d(_x(), 2, padding=2), ValueError, r"smaller than the pooling window"),
        (lambda: R.maxpool2d(_x(), 2, stride=3), ValueError, r"padding='tile' needs stride <= size.*stride \(3, 3\)"),
        (lambda: R.maxpool2d(_x(), 6, padding="valid"), ValueError, r"size \(6, 6\) is larger than the padded input \(5, 5\)"),
        (lambda: R.maxpool2d_backward(_x((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)), (1, 2, 4, 4)), TypeError, r"argmax must have an integer dtype; got dtype float64"),
        (lambda: R.maxpool2d_backward(_x((1, 2, 2, 2)), np.zeros((1, 2, 2, 3), np.intp), (1, 2, 4, 4)), ValueError, r"argmax must have the shape of dy"),
        (lambda: R.maxpool2d_backward(_x((1, 2, 2, 2)), np.full((1, 2, 2, 2), 16, np.intp), (1, 2, 4, 4)), ValueError, r"argmax values must lie in \[0, H\*W\) = \[0, 16\)"),
        (lambda: R.maxpool2d_backward(_x((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), np.intp), (1, 3, 4, 4)), ValueError, r"dy must have the batch and channel sizes"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
