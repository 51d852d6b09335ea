"""The conv backward of a fused Conv2D -> MaxPool2D pair from the pooled cells
(cnn._ops.conv2d_pooled_backward, cnn/_ext/_pool_grad.h) against the NumPy reference's backward
of their scatter (cnn.reference: maxpool2d_backward, then conv2d_backward, in float64), on both
paths ("blocks": every kernel shape the register chunks take, channel blocks with tails;
"columns": few input channels, no dx), strides, paddings and pools with shared winners; the
same bits for every thread count; the fallback for non-finite inputs; and models that take it
against the same models on the dense backward."""

import numpy as np
import pytest

import cnn
from cnn import _ops, reference
from cnn import functional as F
from cnn._ext import _pool_grad

# (x shape, K, (kh, kw), stride, conv padding, pool size, pool stride, pool padding)
CASES = [
    ((3, 32, 14, 14), 16, (3, 3), 1, "same", 2, 2, "tile"),    # the DESIGN CNN's second pair
    ((2, 24, 10, 12), 7, (3, 3), 1, "same", 2, 2, "tile"),     # a channel tail in the block
    ((2, 40, 9, 9), 5, (3, 3), 1, "valid", 2, 2, "tile"),      # two blocks, odd planes
    ((2, 64, 8, 8), 9, (3, 3), 2, "same", 2, 2, "tile"),       # stride 2, two full blocks
    ((2, 32, 12, 11), 6, (5, 5), 1, "same", 2, 2, "tile"),     # 5 wide: chunks of one row
    ((2, 32, 8, 10), 4, (1, 1), 1, "valid", 2, 2, "tile"),     # 1x1
    ((2, 32, 11, 9), 5, (4, 2), 1, "valid", 2, 2, "valid"),    # 2 wide (rows of 2), 4 high
    ((2, 32, 9, 12), 3, (2, 4), 1, "same", 2, 2, "tile"),      # 4 wide (chunks of 2 rows)
    ((2, 32, 13, 13), 6, (3, 3), 1, "same", 3, 2, "same"),     # overlapping windows
    ((1, 32, 6, 6), 3, (3, 3), 1, (0, 2, 1, 0), 2, 2, "tile"),  # uneven padding
]
# the columns path (no dx): C x kh x kw up to 64 floats
COLUMN_CASES = [
    ((3, 1, 28, 28), 32, (3, 3), 1, "same", 2, 2, "tile"),     # the DESIGN CNN's first pair
    ((2, 1, 15, 12), 9, (3, 3), 1, "valid", 3, 2, "same"),     # overlapping windows
    ((2, 3, 16, 16), 6, (3, 3), 2, "same", 2, 2, "tile"),      # 27 taps: two vectors, stride 2
    ((2, 2, 13, 11), 5, (5, 5), 1, "same", 2, 2, "tile"),      # 50 taps: four vectors
    ((4, 6, 9, 9), 7, (1, 1), 1, "valid", 2, 2, "tile"),       # 1x1
    ((5, 1, 12, 12), 3, (2, 3), 1, (1, 0, 2, 1), 2, 2, "tile"),  # uneven padding
]


def _setup(rng, case, dtype=np.float32):
    """(x, w, g, argmax, stride, pads, out_hw, pool) of a case (pool: the MaxPool2D's
    ``(size, stride, pads, out_hw)``): the conv's output
    pooled by the training max-pool (its argmax), g the pooled gradient with ReLU zeros."""
    xs, k, (kh, kw), stride, padding, psize, pstride, ppad = case
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal((k, xs[1], kh, kw)) * 0.2).astype(dtype)
    (sh, sw), pads, out_hw, _, _ = F._conv_geometry(xs, w.shape, stride, padding)
    z = _ops.conv2d(x, w, None, (sh, sw), pads, out_hw, False)
    pool_pads = F.maxpool2d_padding(ppad, (psize, psize), (pstride, pstride), out_hw)
    pool_hw = F.maxpool2d_output_shape((1,) + tuple(out_hw), psize, pstride, ppad)[1:]
    y, argmax = _ops.maxpool2d(z, (psize, psize), (pstride, pstride), pool_pads,
                               tuple(int(v) for v in pool_hw))
    g = rng.standard_normal(y.shape).astype(dtype)
    g[y <= 0] = 0.0                                 # the pooled ReLU's mask
    pool = ((psize, psize), (pstride, pstride), pool_pads, tuple(int(v) for v in pool_hw))
    return x, w, g, argmax, (sh, sw), pads, tuple(out_hw), pool


def _oracle(x, w, g, argmax, stride, pads, out_hw):
    """The reference backward of the scattered gradient, in float64."""
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    dz = reference.maxpool2d_backward(g64, argmax, (x.shape[0], w.shape[0]) + out_hw)
    return reference.conv2d_backward(dz, x64, w64, stride, pads)


def _backward(g, argmax, x, w, stride, pads, out_hw, need_dx, pool, *args, **kwargs):
    """conv2d_pooled_backward on the path pooled_backward_path names for these shapes (as
    Conv2D._pooled_grad decides it)."""
    return _ops.conv2d_pooled_backward(g, argmax, x, w, stride, pads, out_hw, need_dx,
                                       _path(x, w, g, stride, out_hw, pool, need_dx), *args,
                                       **kwargs)


def _close(got, want, name):
    scale = max(float(np.abs(want).max()), 1.0)
    assert got.dtype == np.float32 and got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale, err_msg=name)


def _path(x, w, g, stride, out_hw, pool, need_dx):
    return _ops.pooled_backward_path(x.dtype, x.shape[1], w.shape[2:], stride, *pool[:2],
                                     g.shape[2] * g.shape[3], out_hw[0] * out_hw[1], need_dx)


@pytest.mark.parametrize("case", CASES)
def test_pooled_backward_is_the_reference_backward_of_the_scatter(rng, case):
    x, w, g, argmax, stride, pads, out_hw, pool = _setup(rng, case)
    want = _oracle(x, w, g, argmax, stride, pads, out_hw)
    for need_dx in (True, False):
        if x.shape[1] == 40:  # (two blocks, 40 of 64 channels: the kernel, past the rule)
            dw, db = np.empty_like(w), np.empty(w.shape[0], np.float32)
            dx = np.empty_like(x) if need_dx else None
            shapes = _pool_grad.scratch_shapes(x.shape[0], 40, *out_hw, *w.shape[2:], *stride, 2)
            bufs = [np.empty(s_, np.float32) for s_ in shapes]
            assert _pool_grad.conv_pool_backward(g, argmax, x, w, dx, dw, db, *out_hw, *stride,
                                                 pads[0], pads[2], *bufs, 2) == (True, 0)
        else:
            assert _path(x, w, g, stride, out_hw, pool, need_dx) == "blocks"
            dx, dw, db = _backward(g, argmax, x, w, stride, pads, out_hw,
                                   need_dx, pool)
        _close(dw, want[1], "dw")
        _close(db, want[2], "db")
        if need_dx:
            _close(dx, want[0], "dx")
        else:
            assert dx is None


@pytest.mark.parametrize("case", COLUMN_CASES)
def test_column_path_is_the_reference_weight_gradient_of_the_scatter(rng, case):
    x, w, g, argmax, stride, pads, out_hw, pool = _setup(rng, case)
    want = _oracle(x, w, g, argmax, stride, pads, out_hw)
    assert _path(x, w, g, stride, out_hw, pool, False) == "columns"
    assert _path(x, w, g, stride, out_hw, pool, True) is None       # no dx on this path
    dx, dw, db = _backward(g, argmax, x, w, stride, pads, out_hw, False, pool)
    assert dx is None
    _close(dw, want[1], "dw")
    _close(db, want[2], "db")


def test_pooled_backward_writes_into_the_given_gradients_and_reuses_scratch(rng):
    for case, need_dx in ((CASES[0], True), (COLUMN_CASES[0], False)):
        x, w, g, argmax, stride, pads, out_hw, pool = _setup(rng, case)
        dw, db = np.full_like(w, np.nan), np.full(w.shape[0], np.nan, np.float32)
        scratch = {}
        first = _backward(g, argmax, x, w, stride, pads, out_hw, need_dx,
                          pool, dw, db, scratch)
        assert first[1] is dw and first[2] is db and len(scratch) == 1
        bufs = next(iter(scratch.values()))
        again = _backward(g, argmax, x, w, stride, pads, out_hw, need_dx,
                          pool, scratch=scratch)
        assert next(iter(scratch.values()))[0] is bufs[0]
        for a, b in zip(first, again):
            assert (a is None and b is None) or a.tobytes() == b.tobytes()
        # another batch size replaces the copies (one shape at a time)
        _backward(g[:1], argmax[:1], x[:1], w, stride, pads, out_hw,
                  need_dx, pool, scratch=scratch)
        assert len(scratch) == 1 and next(iter(scratch.values()))[0] is not bufs[0]


@pytest.mark.parametrize("case, need_dx", [
    (((9, 48, 14, 14), 21, (3, 3), 1, "same", 2, 2, "tile"), True),
    (((9, 1, 20, 20), 21, (3, 3), 1, "same", 2, 2, "tile"), False)])
def test_pooled_backward_is_thread_count_invariant(rng, case, need_dx):
    x, w, g, argmax, stride, pads, out_hw, pool = _setup(rng, case)
    before = cnn.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            cnn.set_num_threads(threads)
            runs.append([a.tobytes() for a in _backward(
                g, argmax, x, w, stride, pads, out_hw, need_dx, pool) if a is not None])
    finally:
        cnn.set_num_threads(before)
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("where", ["x", "w", "x columns"])
def test_non_finite_inputs_take_the_dense_backward(rng, where):
    columns = where.endswith("columns")
    x, w, g, argmax, stride, pads, out_hw, pool = _setup(
        rng, COLUMN_CASES[0] if columns else CASES[0])
    (w if where == "w" else x).flat[5] = np.inf
    assert _backward(g, argmax, x, w, stride, pads, out_hw, not columns,
                     pool) is None
    if where == "w":  # dw alone does not read w
        assert _backward(g, argmax, x, w, stride, pads, out_hw, False,
                         pool) is not None


@pytest.mark.parametrize("case, need_dx", [(CASES[0], True), (COLUMN_CASES[0], False)])
def test_a_winner_outside_the_plane_is_an_error_not_a_write(rng, case, need_dx):
    x, w, g, argmax, stride, pads, out_hw, pool = _setup(rng, case)
    bad = argmax.copy()
    bad[1, 2, 3, 1] = out_hw[0] * out_hw[1]
    bad[0, 0, 0, 0] = -1
    g[1, 2, 3, 1] = g[0, 0, 0, 0] = 0.5     # (a zero entry is skipped before its winner is read)
    g[1, 1, 1, 1] = 0.0
    bad[1, 1, 1, 1] = -5
    with pytest.raises(RuntimeError, match="2 pooled cells name a winner outside"):
        _backward(g, bad, x, w, stride, pads, out_hw, need_dx, pool)


def test_kernel_checks_its_scratch_and_width(rng):
    x, w, g, argmax, (sh, sw), pads, (OH, OW), _ = _setup(rng, CASES[0])
    shapes = _pool_grad.scratch_shapes(x.shape[0], x.shape[1], OH, OW, 3, 3, sh, sw, 1)
    small = np.empty((shapes[0][0], shapes[0][1] - 1), np.float32)
    rows = np.empty(shapes[1], np.float32)
    dw, db = np.empty_like(w), np.empty(w.shape[0], np.float32)
    with pytest.raises(ValueError, match="scratch smaller"):
        _pool_grad.conv_pool_backward(g, argmax, x, w, None, dw, db, OH, OW, sh, sw, pads[0],
                                      pads[2], small, rows, 1)
    wide = np.zeros((w.shape[0], w.shape[1], 1, 6), np.float32)
    with pytest.raises(ValueError, match="up to 5 wide"):
        _pool_grad.conv_pool_backward(g, argmax, x, wide, None, np.empty_like(wide), db, OH,
                                      OW, sh, sw, pads[0], pads[2], small, rows, 1)
    cols = np.empty((x.shape[0], OH * OW * 16), np.float32)
    x1, dw1 = np.ascontiguousarray(x[:, :1]), np.empty((w.shape[0], 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="cols smaller"):
        _pool_grad.conv_pool_column_backward(g, argmax, x1, dw1, db, OH, OW, sh, sw, pads[0],
                                             pads[2], np.empty((x.shape[0], OH * OW * 16 - 1),
                                                               np.float32), 1)
    x8, dw8 = np.ascontiguousarray(x[:, :8]), np.empty((w.shape[0], 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match="columns up to 64"):
        _pool_grad.conv_pool_column_backward(g, argmax, x8, dw8, db, OH, OW, sh, sw, pads[0],
                                             pads[2], cols, 1)
    with pytest.raises(ValueError, match="no pooled path"):
        _backward(g, argmax, x.astype(np.float64), w.astype(np.float64), (sh, sw), pads,
                  (OH, OW), True, ((2, 2), (2, 2), (0, 0, 0, 0), (7, 7)))
    with pytest.raises(ValueError, match="no pooled path 'columns'"):  # (it has no dx)
        _ops.conv2d_pooled_backward(g, argmax, x, w, (sh, sw), pads, (OH, OW), True, "columns")


def test_which_pairs_take_it():
    def path(dtype, channels, kernel, cells, need_dx=True):
        return _ops.pooled_backward_path(dtype, channels, kernel, (1, 1), (2, 2), (2, 2),
                                         *cells, need_dx)
    f32, quarter = np.float32, (7 * 7, 14 * 14)
    assert path(f32, 32, (3, 3), quarter) == "blocks"
    assert path(f32, 24, (5, 5), quarter) == "blocks"        # a block three quarters full
    assert path(np.float64, 32, (3, 3), quarter) is None     # float32 only
    assert path(f32, 16, (3, 3), quarter) is None            # half a block
    assert path(f32, 40, (3, 3), quarter) is None            # two blocks, 40 of 64 channels
    assert path(f32, 32, (7, 7), quarter) is None            # wider than the register chunks
    assert path(f32, 32, (3, 3), (13 * 13, 14 * 14)) is None  # a 2x2 / stride-1 pool
    assert path(f32, 1, (3, 3), (196, 784)) is None          # the DESIGN CNN's first conv
    assert path(f32, 1, (3, 3), (196, 784), False) == "columns"  # ... which needs no dx
    assert path(f32, 7, (3, 3), (196, 784), False) == "columns"  # 63 taps
    assert path(f32, 8, (3, 3), (196, 784), False) is None       # 72
    assert path(f32, 32, (3, 3), quarter, False) == "blocks"


def _design(seed):
    return cnn.models.design_cnn(input_shape=(1, 28, 28), classes=4, seed=seed)


def _vggish(seed):
    L = cnn.layers
    return cnn.Sequential([L.Conv2D(32, 3, padding="same", activation="relu"),
                           L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                           L.Conv2D(24, 3, padding="same"), L.MaxPool2D(3, stride=2,
                                                                       padding="same"),
                           L.Flatten(), L.Dense(4, activation="softmax")],
                          input_shape=(3, 16, 16), seed=seed)


@pytest.mark.parametrize("build", [_design, _vggish])
def test_models_train_as_on_the_dense_backward(monkeypatch, rng, build):
    """Three SGD steps with the pooled backward against the scatter + dense backward: the same
    losses and weights up to float32 rounding (the sums run in another order)."""
    probe = build(0)
    shape = probe.input_shape
    x = rng.standard_normal((8,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    runs = {}
    for pooled in (True, False):
        monkeypatch.setattr(_ops, "POOLED_BACKWARD", pooled)
        model = build(1).compile("cross_entropy", cnn.optimizers.SGD(lr=0.05, momentum=0.9))
        taken = []
        for step in model._steps:
            if step.fused == "pool":
                orig = step.layer._backward_pooled

                def spy(grad, orig=orig, taken=taken):
                    taken.append(type(grad).__name__)
                    return orig(grad)
                monkeypatch.setattr(step.layer, "_backward_pooled", spy)
        losses = [model.train_step(x, y) for _ in range(3)]
        runs[pooled] = losses, [p.copy() for p in model.params], [g.copy() for g in model.grads]
        assert ("_PooledGradient" in taken) == pooled
    (la, pa, ga), (lb, pb, gb) = runs[True], runs[False]
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for a, b in zip(pa + ga, pb + gb):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_the_layer_falls_back_to_the_dense_bits_when_the_kernel_declines(monkeypatch, rng):
    # (a model checks its input is finite; a non-finite conv input comes from overflowing
    # weights, and conv2d_pooled_backward then returns None: the layer must scatter and take
    # the dense backward, as the unfused pair does)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 4, 4)
    calls = []

    def declines(*args, **kwargs):
        calls.append(1)
        return None
    runs = []
    for pooled in (True, False):
        monkeypatch.setattr(_ops, "POOLED_BACKWARD", pooled)
        monkeypatch.setattr(_ops, "conv2d_pooled_backward", declines)
        model = _design(2).compile("cross_entropy", "sgd")
        model.forward_backward(x, y)
        runs.append([g.tobytes() for g in model.grads])
    assert calls == [1, 1]              # both pairs (columns, blocks), the pooled run only
    assert runs[0] == runs[1]


def test_pooled_backward_against_finite_differences(rng):
    """dw and dx of the pooled path against central differences of the float64 reference
    forward: L = sum(G * maxpool(relu(conv(x, w)))), on entries chosen at random."""
    x = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    w = (rng.standard_normal((4, 32, 3, 3)) * 0.2).astype(np.float32)
    G = rng.standard_normal((2, 4, 4, 4))

    def loss(x64, w64):
        z = reference.conv2d(x64, w64, None, 1, 1)
        y, _ = reference.maxpool2d(np.maximum(z, 0.0), 2)
        return float((G * y).sum())

    z = _ops.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (8, 8), True)
    y, argmax = _ops.maxpool2d(z, (2, 2), (2, 2), (0, 0, 0, 0), (4, 4))
    g = np.where(y > 0, G, 0.0).astype(np.float32)
    pool = ((2, 2), (2, 2), (0, 0, 0, 0), (4, 4))
    dx, dw, _ = _backward(g, argmax, x, w, (1, 1), (1, 1, 1, 1), (8, 8), True,
                          pool)
    x64, w64, eps = x.astype(np.float64), w.astype(np.float64), 1e-4
    for array, grad in ((w64, dw), (x64, dx)):
        for flat in rng.choice(array.size, 25, replace=False):
            idx = np.unravel_index(flat, array.shape)
            keep = array[idx]
            array[idx] = keep + eps
            up = loss(x64, w64)
            array[idx] = keep - eps
            down = loss(x64, w64)
            array[idx] = keep
            assert abs((up - down) / (2 * eps) - grad[idx]) <= 1e-3 * max(1.0, abs(grad[idx]))
