"""cnn.functional.maxpool2d / maxpool2d_backward against a per-window loop, cnn.reference,
finite differences and the seed's examples."""

import numpy as np
import pytest
from conftest import (
    DTYPES,
    assert_close,
    distinct_values,
    naive_maxpool,
    naive_maxpool_backward,
    numerical_grad,
    pads_pool,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import cnn
from cnn import functional as F
from cnn import reference as R

# (x shape, size, stride, padding)
CASES = [
    ((2, 3, 6, 6), 2, None, "tile"),
    ((2, 3, 7, 5), 2, None, "tile"),             # odd sizes: one -inf row/column bottom/right
    ((1, 2, 7, 8), 3, None, "tile"),
    ((2, 2, 7, 9), (2, 3), None, "tile"),        # non-square window
    ((2, 2, 9, 7), (3, 2), (2, 1), "tile"),      # non-square, overlapping along the rows
    ((1, 2, 7, 7), 3, 2, "valid"),               # overlapping windows
    ((2, 2, 6, 9), 3, 2, "tile"),
    ((1, 2, 6, 6), 3, 2, 1),
    ((1, 1, 5, 6), (3, 2), (2, 1), (2, 0, 1, 1)),
    ((1, 2, 5, 5), 3, 1, (1, 2)),
    ((1, 1, 2, 3), 4, None, "tile"),             # window larger than the input: filled up
    ((2, 1, 4, 4), 1, None, "tile"),             # 1x1 window: the identity
    ((1, 1, 5, 5), 2, 3, "valid"),               # stride > size: cells skipped
    ((3, 4, 28, 28), 2, None, "tile"),           # MNIST-sized planes
]


def _pair(v, default):
    if v is None:
        return default
    return (v, v) if isinstance(v, int) else tuple(v)


def _check_against_oracles(x, size, stride, padding, dtype, rng):
    k = _pair(size, None)
    s = _pair(stride, k)
    pads = pads_pool(padding, k[0], k[1], x.shape[2], x.shape[3], *s)
    ey, eidx = naive_maxpool(x, k, s, pads)
    y, idx = F.maxpool2d(x, size, stride, padding)
    assert y.dtype == dtype and idx.dtype == np.intp
    np.testing.assert_array_equal(y, ey.astype(dtype))         # a max is exact
    np.testing.assert_array_equal(idx, eidx)
    ry, ridx = R.maxpool2d(x, size, stride, padding)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = F.maxpool2d_backward(dy, idx, x.shape)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, naive_maxpool_backward(dy, eidx, x.shape), dtype)
    return y, idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, size, stride, padding", CASES)
def test_matches_window_loop_and_reference(rng, dtype, xs, size, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    y, idx = _check_against_oracles(x, size, stride, padding, dtype, rng)
    # every argmax is a real cell holding the output value
    flat = x.reshape(xs[0], xs[1], -1)
    assert idx.min() >= 0 and idx.max() < xs[2] * xs[3]
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(xs[0], xs[1], -1), 2),
                                  y.reshape(xs[0], xs[1], -1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "tile", 1])
def test_two_by_two_rows_of_every_length(rng, dtype, padding):
    # The 2x2 / stride-2 row kernel steps 8 (AVX2) or 16 (AVX-512F) windows at a time with a
    # masked last step: row lengths from 1 to 40 windows, small integers (ties), padding on
    # the right only ("tile", odd widths) and on both sides (1: each window row starts one
    # cell left of the plane's row, the edge windows taking the general loop).
    for w in range(2, 82, 3):
        x = rng.integers(-2, 3, (1, 2, 5, w)).astype(dtype)
        _check_against_oracles(x, 2, None, padding, dtype, rng)


def test_tile_covers_every_input_cell(rng):
    # "tile" leaves no row or column out: ceil(H / k) windows, and the last one holds the
    # bottom-right input cell (made the plane's maximum, so it must win that window).
    for xs, size in [((1, 1, 7, 5), 2), ((1, 1, 5, 5), 3), ((1, 1, 8, 3), (3, 2)), ((1, 1, 2, 2), 3)]:
        x = distinct_values(rng, xs)
        x[0, 0, -1, -1] = 100.0
        y, idx = F.maxpool2d(x, size)
        k = _pair(size, None)
        assert y.shape[2:] == (-(-xs[2] // k[0]), -(-xs[3] // k[1]))
        assert y[0, 0, -1, -1] == 100.0 and idx[0, 0, -1, -1] == xs[2] * xs[3] - 1


# ----------------------------------------------------------------------------- the seed's examples


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_example_three_by_three(dtype):
    """Seed eq. 15-16: 3x3 input, 2x2 window, stride 2, p = 1 on the bottom/right."""
    i = np.array([[[[1.0, 9.0, 4.0], [3.0, 2.0, 8.0], [6.0, 5.0, 7.0]]]], dtype)
    y, idx = F.maxpool2d(i, 2)
    assert y.shape == (1, 1, 2, 2)
    # O_{1,1} = max(I11, I12, I21, I22); the other windows hold padding
    np.testing.assert_array_equal(y[0, 0], [[max(1, 9, 3, 2), max(4, 8)], [max(6, 5), 7]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 5], [6, 8]])
    dx = F.maxpool2d_backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]], dtype), idx, i.shape)
    np.testing.assert_array_equal(dx[0, 0], [[0, 10, 0], [0, 0, 20], [30, 0, 40]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_example_negative_inputs_padding_never_wins(dtype):
    i = -np.arange(1.0, 10.0, dtype=dtype).reshape(1, 1, 3, 3)
    y, idx = F.maxpool2d(i, 2)
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -3.0], [-7.0, -9.0]])  # not the padding's 0
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [6, 8]])
    # padding on the top/left too
    y, idx = F.maxpool2d(i, 2, padding=(1, 0, 1, 0))
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_notes8_five_by_three_pads_one_not_two(rng):
    x = rng.standard_normal((2, 2, 5, 5))
    y, idx = F.maxpool2d(x, 3)
    assert y.shape == (2, 2, 2, 2)   # 5 + 1 = 2 windows of 3
    np.testing.assert_array_equal(y[:, :, 0, 0], x[:, :, :3, :3].max(axis=(2, 3)))
    np.testing.assert_array_equal(y[:, :, 0, 1], x[:, :, :3, 3:].max(axis=(2, 3)))
    np.testing.assert_array_equal(y[:, :, 1, 1], x[:, :, 3:, 3:].max(axis=(2, 3)))


# ----------------------------------------------------------------------------- ties, -inf, NaN


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_first_cell_in_row_major_order(dtype):
    x = np.zeros((2, 2, 5, 5), dtype)          # all-zero planes (MNIST's background)
    x[1] = 0.25                                 # all-equal, non-zero
    x[0, 1] = -3.0                              # all-equal, negative, with padded cells
    y, idx = F.maxpool2d(x, 2)
    np.testing.assert_array_equal(y, x[:, :, ::2, ::2])
    first = np.array([[0, 2, 4], [10, 12, 14], [20, 22, 24]])
    for n in range(2):
        for c in range(2):
            np.testing.assert_array_equal(idx[n, c], first)
    # overlapping windows over an all-equal plane: each window's own top-left cell
    y, idx = F.maxpool2d(np.ones((1, 1, 4, 4), dtype), 3, stride=1, padding="valid")
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [4, 5]])
    # a tie between the 2nd and the 4th cells goes to the 2nd, and only it gets the gradient
    x = np.array([[[[1.0, 5.0], [2.0, 5.0]]]], dtype)
    y, idx = F.maxpool2d(x, 2)
    assert idx.item() == 1
    dx = F.maxpool2d_backward(np.ones((1, 1, 1, 1), dtype), idx, x.shape)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_minus_inf_inputs_keep_a_real_argmax_and_nan_propagates():
    y, idx = F.maxpool2d(np.full((1, 1, 3, 3), -np.inf), 2)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [6, 8]])
    x = np.array([[[[1.0, np.nan, 5.0, 2.0], [np.nan, 0.0, 1.0, np.nan]]]])
    y, idx = F.maxpool2d(x, 2)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(idx[0, 0], [[1, 7]])


# ----------------------------------------------------------------------------- backward


def test_backward_accumulates_overlapping_windows():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0          # the centre wins all four 2x2 windows at stride 1
    y, idx = F.maxpool2d(x, 2, stride=1, padding="valid")
    assert np.all(idx == 4)
    dx = F.maxpool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), idx, x.shape)
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_scatters_any_argmax_of_a_tiled_shape(rng, dtype):
    """(H, W) = (2*OH, 2*OW) does not mean 2x2 windows: argmax of another geometry with that
    output shape (3x3 windows, stride 2, padding 1), or an index moved into a neighbouring
    block (two windows sharing a cell), must still scatter-add exactly."""
    x = rng.standard_normal((3, 4, 12, 10)).astype(dtype)
    dy = rng.standard_normal((3, 4, 6, 5)).astype(dtype)
    _, idx22 = F.maxpool2d(x, 2)
    _, idx33 = F.maxpool2d(x, 3, stride=2, padding=(1, 1, 1, 1))
    assert idx33.shape == idx22.shape
    assert (idx33 != idx22).any()
    moved = idx22.copy()
    moved[1, 2, 3, 4] = moved[1, 2, 3, 3]          # two windows of one plane share a cell
    # one window per cell: exact; overlapping windows add in the dtype (the oracle in float64)
    np.testing.assert_array_equal(F.maxpool2d_backward(dy, idx22, x.shape),
                                  naive_maxpool_backward(dy, idx22, x.shape))
    for idx in (idx33, moved):
        assert_close(F.maxpool2d_backward(dy, idx, x.shape),
                     naive_maxpool_backward(dy, idx, x.shape), dtype)
    got = F.maxpool2d_backward(dy, moved, x.shape)
    assert got[1, 2].flat[moved[1, 2, 3, 3]] == dy[1, 2, 3, 3] + dy[1, 2, 3, 4]
    assert got[1, 2].flat[idx22[1, 2, 3, 4]] == 0 or idx22[1, 2, 3, 4] == moved[1, 2, 3, 3]


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_accepts_int32_argmax_and_noncontiguous_dy(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    y, idx = F.maxpool2d(x, 2)
    dy = rng.standard_normal((2, 3, 3, 6)).astype(dtype)[..., ::2]
    expected = naive_maxpool_backward(dy, idx, x.shape)
    assert_close(F.maxpool2d_backward(dy, idx.astype(np.int32), x.shape), expected, dtype)
    assert_close(F.maxpool2d_backward(dy, idx, list(x.shape)), expected, dtype)


@pytest.mark.parametrize(
    "xs, size, stride, padding",
    [((2, 2, 5, 5), 2, None, "tile"), ((1, 2, 7, 6), 3, 2, "valid"), ((1, 1, 6, 7), (2, 3), (1, 2), (1, 0, 2, 1))],
)
def test_backward_finite_differences_float64(rng, one_thread, xs, size, stride, padding):
    x = distinct_values(rng, xs)      # no near-ties: max is linear around x
    y, idx = F.maxpool2d(x, size, stride, padding)
    g = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(F.maxpool2d(x, size, stride, padding)[0] * g))

    np.testing.assert_allclose(F.maxpool2d_backward(g, idx, x.shape), numerical_grad(loss, x, eps=1e-4),
                               rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- properties


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    sh, sw = _pair(stride, (kh, kw))
    forms = [st.just("valid"), st.integers(0, min(kh, kw) - 1),
             st.tuples(st.integers(0, kh - 1), st.integers(0, kw - 1)),
             st.tuples(st.integers(0, kh - 1), st.integers(0, kh - 1),
                       st.integers(0, kw - 1), st.integers(0, kw - 1))]
    if sh <= kh and sw <= kw:
        forms.append(st.just("tile"))
    padding = draw(st.one_of(*forms))
    if padding == "tile":   # fills a too-small input up to one window
        t = b = l = r = kh + kw
    else:
        t, b, l, r = pads_pool(padding, kh, kw, 0, 0)
    h = draw(st.integers(max(1, kh - t - b), max(1, kh - t - b) + 7))
    w = draw(st.integers(max(1, kw - l - r), max(1, kw - l - r) + 7))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, c, h, w), (kh, kw), stride, padding, dtype, ties, seed


@settings(max_examples=60, deadline=None)
@given(pool_problems())
def test_property_vs_window_loop_and_reference(problem):
    xs, size, stride, padding, dtype, ties, seed = problem
    rng = np.random.default_rng(seed)
    if ties:   # few distinct values, many negative: ties everywhere, padding next to negatives
        x = rng.integers(-3, 1, size=xs).astype(dtype)
    else:
        x = rng.standard_normal(xs).astype(dtype)
    _check_against_oracles(x, size, stride, padding, dtype, rng)


# ----------------------------------------------------------------------------- determinism


def test_repeated_calls_and_thread_counts_give_identical_results(rng):
    x = rng.integers(-2, 3, size=(64, 32, 27, 27)).astype(np.float32)   # many ties; big enough for 2 threads
    old = cnn.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2):
            cnn.set_num_threads(n)
            for size, stride in ((2, None), (3, 2)):
                y, idx = F.maxpool2d(x, size, stride)
                results.append((n, y, idx, F.maxpool2d_backward(y, idx, x.shape)))
    finally:
        cnn.set_num_threads(old)
    assert cnn.get_num_threads() == old
    for a, b in zip(results[:2], results[2:4]):
        for one, two in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(one, two)
    for a, b in zip(results[2:4], results[4:6]):
        for one, two in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_input(rng, dtype):
    x = rng.standard_normal((2, 6, 7, 14)).astype(dtype)[:, 1::2, :, ::-2]
    assert not x.flags.c_contiguous
    y, idx = F.maxpool2d(x, 2)
    ey, eidx = naive_maxpool(x, (2, 2), (2, 2), (0, 1, 0, 1))
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(idx, eidx)


# ----------------------------------------------------------------------------- bad input


def _a(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


DY, IDX, XS = _a((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), np.intp), (1, 2, 4, 4)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.maxpool2d(_a((5, 5))), ValueError, r"x must be 4-D.*\(5, 5\)"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4), np.int32)), TypeError, r"x must have dtype float32 or float64, got int32"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4), np.float16)), TypeError, r"x must have dtype float32 or float64, got float16"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 0), ValueError, r"size must be >= 1, got 0"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2.0), TypeError, r"size must be an int.*2\.0"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, stride=-1), ValueError, r"stride must be >= 1, got -1"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, stride="2"), TypeError, r"stride must be an int"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, padding="full"), ValueError, r"padding must be one of \['tile', 'valid', 'same'\].*'full'"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, padding=2), ValueError, r"smaller than the window.*\(2, 2, 2, 2\)"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 2, stride=3), ValueError, r"padding='tile' needs stride <= size"),
        (lambda: F.maxpool2d(_a((1, 1, 4, 4)), 5, padding="valid"), ValueError, r"larger than the padded input.*4"),
        (lambda: F.maxpool2d_backward(DY, IDX.astype(np.float64), XS), TypeError, r"argmax must be an integer array, got dtype float64"),
        (lambda: F.maxpool2d_backward(DY, IDX[..., :1], XS), ValueError, r"argmax must have dy's shape \(1, 2, 2, 2\), got \(1, 2, 2, 1\)"),
        (lambda: F.maxpool2d_backward(DY, IDX + 16, XS), ValueError, r"argmax values must lie in \[0, H\*W\) = \[0, 16\).*\[16, 16\]"),
        (lambda: F.maxpool2d_backward(DY, IDX - 1, XS), ValueError, r"argmax values must lie in \[0, H\*W\) = \[0, 16\).*\[-1, -1\]"),
        (lambda: F.maxpool2d_backward(_a((1, 2, 2)), IDX[0], XS), ValueError, r"dy must be 4-D"),
        (lambda: F.maxpool2d_backward(_a((1, 2, 2, 2), np.int64), IDX, XS), TypeError, r"dy must have dtype float32 or float64, got int64"),
        (lambda: F.maxpool2d_backward(DY, IDX, (1, 3, 4, 4)), ValueError, r"x_shape \(1, 3, 4, 4\) and dy.shape \(1, 2, 2, 2\) disagree"),
        (lambda: F.maxpool2d_backward(DY, IDX, (1, 2, 4)), ValueError, r"x_shape must be 4 non-negative ints"),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint64])
def test_backward_rejects_out_of_range_argmax_of_any_integer_dtype(dtype):
    dy = np.ones((1, 1, 2, 2))
    good = np.array([[[[0, 3], [8, 15]]]])
    dx = F.maxpool2d_backward(dy, good.astype(dtype), (1, 1, 4, 4))
    assert dx.sum() == 4 and dx[0, 0, 3, 3] == 1
    bad = good.copy()
    bad[0, 0, 1, 1] = 16
    with pytest.raises(ValueError, match=r"\[0, 16\).*got values in \[0, 16\]"):
        F.maxpool2d_backward(dy, bad.astype(dtype), (1, 1, 4, 4))
    if dtype is np.uint64:  # 2**64 - 1 wraps to -1 as intp: still caught
        bad[0, 0, 1, 1] = 0
        huge = bad.astype(np.uint64)
        huge[0, 0, 0, 0] = np.iinfo(np.uint64).max
        with pytest.raises(ValueError, match=r"argmax values must lie in \[0, H\*W\)"):
            F.maxpool2d_backward(dy, huge, (1, 1, 4, 4))
