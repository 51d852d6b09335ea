"""The elementwise kernels (cnn._ext._eltwise through cnn._ops): ReLU, the sum of two tensors,
the in-place sum and the fused add + ReLU, bit for bit against NumPy (np.maximum(z, 0) and
np.add are the oracles), on special values (NaN with payloads and signs, inf, -0.0,
subnormals, overflow), odd and empty sizes, misaligned views, both float types and 1, 2 and 3
threads; then the layers and the graph's gradient sum that use them."""

import numpy as np
import pytest
from conftest import numerical_grad

import cnn
from cnn import _ops, graph, layers
from cnn._ext import _eltwise

DTYPES = (np.float32, np.float64)
CHUNK = 32768  # the kernels' work item (values): sizes around it cut items and tails
SIZES = (0, 1, 7, 8, 15, 16, 17, 33, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5)


def _uint(dtype):
    return np.uint32 if np.dtype(dtype) == np.float32 else np.uint64


def special(dtype):
    """Values where a select or an addition could differ from NumPy's: NaNs of both signs and
    two payloads (one signalling), infinities, signed zeros, subnormals, the extremes."""
    info = np.finfo(dtype)
    u = _uint(dtype)
    bits = 32 if u is np.uint32 else 64
    exp_all = (1 << (bits - 1)) - (1 << info.nmant)         # exponent all ones, sign 0
    qnan_payload = np.array([exp_all | (1 << (info.nmant - 1)) | 5], dtype=u).view(dtype)[0]
    snan = np.array([exp_all | 3], dtype=u).view(dtype)[0]  # quiet bit clear
    neg_nan = np.array([np.nan], dtype=dtype).view(u)[0] | np.array([1 << (bits - 1)], dtype=u)[0]
    neg_nan = np.array([neg_nan], dtype=u).view(dtype)[0]
    return np.array([np.nan, neg_nan, qnan_payload, snan, np.inf, -np.inf, 0.0, -0.0,
                     info.smallest_subnormal, -info.smallest_subnormal, info.tiny, -info.tiny,
                     info.max, -info.max, 1.0, -1.0, 0.5, -2.5], dtype=dtype)


def values(rng, n, dtype):
    """``n`` values: mostly standard normal, every eighth one a special value."""
    v = rng.standard_normal(n).astype(dtype)
    sp = special(dtype)
    v[::8] = sp[rng.integers(0, sp.size, size=v[::8].size)]
    return v


def same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def same_sum_bits(got, want):
    """Same bits, except that a NaN may carry another NaN's payload: NumPy's own loops differ
    there (``a += b`` on one value keeps ``b``'s payload of NaN + NaN, ``np.add`` ``a``'s)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_relu_is_np_maximum_bit_for_bit(rng, dtype, n):
    z = values(rng, n, dtype)
    same_bits(_ops.relu(z), np.maximum(z, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(dtype):
    z = special(dtype)
    got = _ops.relu(z)
    same_bits(got, np.maximum(z, 0))
    # what those bits are: -0.0 becomes +0.0, every NaN stays the same NaN
    assert not np.signbit(got[7]) and got[7] == 0
    nan = np.isnan(z)
    assert np.array_equal(got[nan].view(_uint(dtype)), z[nan].view(_uint(dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_add_add_into_and_add_relu_are_numpy_bit_for_bit(rng, dtype, n):
    a, b = values(rng, n, dtype), values(rng, n, dtype)
    with np.errstate(all="ignore"):
        want = np.add(a, b)
        same_bits(_ops.add(a, b), want)
        acc = a.copy()
        assert _ops.add_into(acc, b) is acc
        same_bits(acc, want)
        same_bits(_ops.add_relu(a, b, np.empty_like(a)), np.maximum(want, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_special_values_every_pair(dtype):
    """Every ordered pair of special values: NaN + NaN of another payload, inf - inf, max +
    max (overflow), -0.0 + -0.0, subnormal sums."""
    sp = special(dtype)
    a, b = np.repeat(sp, sp.size), np.tile(sp, sp.size)
    with np.errstate(all="ignore"):
        same_bits(_ops.add(a, b), np.add(a, b))
        same_bits(_ops.add_relu(a, b, np.empty_like(a)), np.maximum(np.add(a, b), 0))
        acc = a.copy()
        _ops.add_into(acc, b)
        same_bits(acc, np.add(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_and_multidimensional_views(rng, dtype):
    """Contiguous views that start one value into a buffer (no vector alignment), 4-D."""
    buf = values(rng, 2 * 64 * 5 * 7 * 3 + 2, dtype)
    z = buf[1:1 + 64 * 5 * 7 * 3].reshape(64, 5, 7, 3)
    w = buf[-64 * 5 * 7 * 3 - 1:-1].reshape(64, 5, 7, 3)
    assert z.flags.c_contiguous and w.flags.c_contiguous
    with np.errstate(all="ignore"):
        same_bits(_ops.relu(z), np.maximum(z, 0))
        same_bits(_ops.add(z, w), np.add(z, w))
        out = np.empty(buf.size + 1, dtype)[1:1 + z.size].reshape(z.shape)
        same_bits(_ops.add_relu(z, w, out), np.maximum(np.add(z, w), 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(rng, dtype):
    n = 5 * CHUNK + 123
    a, b = values(rng, n, dtype), values(rng, n, dtype)
    runs = []
    for threads in (1, 2, 3):
        r, s, f = np.empty_like(a), np.empty_like(a), np.empty_like(a)
        acc = a.copy()
        with np.errstate(all="ignore"):
            _eltwise.relu_forward(a, r, threads)
            _eltwise.add(a, b, s, threads)
            _eltwise.add_into(acc, b, threads)
            _eltwise.add_relu(a, b, f, threads)
        runs.append([r.tobytes(), s.tobytes(), acc.tobytes(), f.tobytes()])
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][1] == runs[0][2]


def test_the_thread_policy_keeps_small_tensors_on_one_thread():
    cnn.set_num_threads(2)
    try:
        assert _ops.update_threads(np.empty(1000, np.float32)) == 1
        expected = 2 if cnn.show_config()["openmp"] else 1
        assert _ops.update_threads(np.empty((64, 64, 8, 8), np.float32)) == expected
    finally:
        cnn.set_num_threads(None)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_activation_and_layer_forward_match_np_maximum(rng, dtype):
    x = values(rng, 6 * 3 * 9 * 11, dtype).reshape(6, 3, 9, 11)
    same_bits(cnn.activations.ReLU().forward(x), np.maximum(x, 0))
    strided = x[:, :, ::2]                                    # not contiguous: NumPy's path
    same_bits(cnn.activations.ReLU().forward(strided), np.maximum(strided, 0))
    layer = layers.Activation("relu")
    layer.build((3, 9, 11), dtype=dtype)
    same_bits(layer.forward(x, training=True), np.maximum(x, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_add_layer_forward_matches_numpy_sums(rng, dtype, k):
    xs = [values(rng, 5 * 2 * 7 * 3, dtype).reshape(5, 2, 7, 3) for _ in range(k)]
    layer = layers.Add()
    layer.build([(2, 7, 3)] * k, dtype=dtype)
    with np.errstate(all="ignore"):
        want = np.add(xs[0], xs[1])
        for x in xs[2:]:
            want += x
        got = layer.forward(xs, training=True)
        same_sum_bits(got, want)
        assert all(not np.may_share_memory(got, x) for x in xs)
        # a non-contiguous input takes NumPy's path: the same sums
        views = [np.asfortranarray(x) for x in xs]
        same_sum_bits(layer.forward(views, training=True), want)
    g = rng.standard_normal(want.shape).astype(dtype)
    grads = layer.backward(g)
    assert len(grads) == k and all(gi is g for gi in grads)


# ----------------------------------------------------------------------------- graph gradient sums


def test_accumulate_gradient_never_writes_into_arrays_it_was_given(rng):
    """Add hands one array to each of its inputs: a sum at one input must not change the
    other's. The first sum makes a new array, later ones add into it (np.add's order)."""
    shared = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    keep = shared.copy()
    g1, g2 = (rng.standard_normal(shared.shape).astype(np.float32) for _ in range(2))
    grads, summed = {}, set()
    graph._accumulate_gradient(grads, summed, "a", shared)
    graph._accumulate_gradient(grads, summed, "b", shared)
    assert grads["a"] is shared and grads["b"] is shared and not summed
    graph._accumulate_gradient(grads, summed, "a", g1)
    first = grads["a"]
    assert first is not shared and summed == {"a"}
    graph._accumulate_gradient(grads, summed, "a", g2)
    assert grads["a"] is first                      # in place, into the array of its own
    same_bits(grads["a"], np.add(np.add(keep, g1), g2))
    same_bits(shared, keep)
    same_bits(grads["b"], keep)
    # the same array twice (Add([x, x])), and a non-contiguous term
    graph._accumulate_gradient(grads, summed, "b", shared)
    same_bits(grads["b"], np.add(keep, keep))
    graph._accumulate_gradient(grads, summed, "b", np.asfortranarray(g1))
    same_bits(grads["b"], np.add(np.add(keep, keep), g1))
    same_bits(shared, keep)


def test_a_tensor_read_three_times_gets_the_sum_of_three_gradients(rng):
    """x feeds two convolutions and the Add itself: its gradient is three terms (one new array,
    then one in-place sum), checked against float64 finite differences of the loss in x's
    producer's weights."""
    inputs = cnn.Input((2, 5, 5))
    stem, ca, cb = (layers.Conv2D(3, 3, padding="same"), layers.Conv2D(3, 3, padding="same"),
                    layers.Conv2D(3, 1))
    dense = layers.Dense(3, activation="softmax")
    h = stem(inputs)
    out = layers.Activation("relu")(layers.Add()([h, ca(h), cb(h)]))
    model = cnn.Model(inputs, dense(layers.Flatten()(out)), seed=4, dtype="float64")
    model.compile(loss="cross_entropy", optimizer="sgd")
    x, y = rng.standard_normal((3, 2, 5, 5)), np.array([0, 2, 1])
    loss_value, grads = model.compute_gradients(x, y)
    loss = cnn.losses.CrossEntropy()

    def f():  # the forward written out with NumPy's sums: the oracle
        t = stem.forward(x)
        t = np.maximum(t + ca.forward(t) + cb.forward(t), 0)
        return loss.forward(dense.forward(t.reshape(3, -1)), y)

    assert loss_value == pytest.approx(f(), rel=1e-10)
    assert np.abs(grads["0.weight"]).max() > 0
    for key, p in model.named_params():
        np.testing.assert_allclose(grads[key], numerical_grad(f, p), rtol=1e-5, atol=1e-8,
                                   err_msg=key)
