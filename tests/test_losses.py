"""Losses: hand-computed values, float64 finite-difference gradients, the fused softmax +
cross-entropy path against the Jacobian path, stability at +-1e4, label validation."""

import math

import numpy as np
import pytest
from conftest import numerical_grad_of

from cnn import activations
from cnn import losses as L


def probabilities(rng, n, k):
    """Rows in the simplex, every entry well above the clamp (so the loss is smooth there)."""
    p = rng.uniform(0.2, 1.0, size=(n, k))
    return p / p.sum(axis=1, keepdims=True)


def soft_targets(rng, n, k):
    t = rng.uniform(0.0, 1.0, size=(n, k))
    return t / t.sum(axis=1, keepdims=True)


Y_PRED = np.array([[0.5, 0.2, 0.3], [0.1, 0.8, 0.1]])
LABELS = np.array([0, 1])
ONE_HOT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_mse_hand_example_is_half_of_keras_mse():
    # item 1: (1/3) * 1/2 * (0.25 + 0.04 + 0.09) = 0.19/3; item 2: (1/3) * 1/2 * (0.01 + 0.04 + 0.01)
    expected = (0.19 / 3 + 0.03 / 3) / 2
    mse = L.MeanSquaredError()
    assert mse.forward(Y_PRED, ONE_HOT) == pytest.approx(expected, rel=1e-14)
    assert mse.forward(Y_PRED, LABELS) == pytest.approx(expected, rel=1e-14)
    keras_style = np.mean((Y_PRED - ONE_HOT) ** 2)
    assert mse.forward(Y_PRED, ONE_HOT) == pytest.approx(keras_style / 2, rel=1e-14)
    # d/dyhat = (yhat - y) / (N * n_L)
    np.testing.assert_allclose(mse.backward(Y_PRED, LABELS), (Y_PRED - ONE_HOT) / 6, rtol=1e-15)


def test_mse_matches_torch_mse_over_two():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    ref = torch.nn.MSELoss()(torch.from_numpy(p), torch.from_numpy(t)).item()
    assert L.MeanSquaredError().forward(p, t) == pytest.approx(ref / 2, rel=1e-12)


def test_cross_entropy_hand_example():
    ce = L.CrossEntropy()
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert ce.forward(Y_PRED, LABELS) == pytest.approx(expected, rel=1e-14)
    assert ce.forward(Y_PRED, ONE_HOT) == pytest.approx(expected, rel=1e-14)
    grad = np.zeros_like(Y_PRED)
    grad[0, 0], grad[1, 1] = -1 / (2 * 0.5), -1 / (2 * 0.8)
    np.testing.assert_allclose(ce.backward(Y_PRED, LABELS), grad, rtol=1e-15)
    np.testing.assert_allclose(ce.backward(Y_PRED, ONE_HOT), grad, rtol=1e-15)


@pytest.mark.parametrize("loss_name, target_kind", [
    ("mse", "labels"), ("mse", "one_hot"), ("mse", "soft"), ("mse", "real"),
    ("cross_entropy", "labels"), ("cross_entropy", "one_hot"), ("cross_entropy", "soft")])
def test_backward_matches_finite_differences(loss_name, target_kind):
    rng = np.random.default_rng(5)
    n, k = 4, 5
    labels = rng.integers(0, k, size=n)
    y = {"labels": labels, "one_hot": L.one_hot(labels, k, np.float64),
         "soft": soft_targets(rng, n, k), "real": rng.standard_normal((n, k))}[target_kind]
    p = probabilities(rng, n, k)
    loss = L.get(loss_name)
    expected = numerical_grad_of(lambda pp: loss.forward(pp, y), p)
    np.testing.assert_allclose(loss.backward(p, y), expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("target_kind", ["labels", "one_hot", "soft"])
def test_fused_logits_path(target_kind):
    rng = np.random.default_rng(6)
    n, k = 5, 4
    labels = rng.integers(0, k, size=n)
    y = {"labels": labels, "one_hot": L.one_hot(labels, k, np.float64),
         "soft": soft_targets(rng, n, k)}[target_kind]
    z = rng.standard_normal((n, k)) * 3
    ce, sm = L.CrossEntropy(), activations.Softmax()
    s = sm.forward(z)
    # same value as cross-entropy of the probabilities
    assert ce.forward_from_logits(z, y) == pytest.approx(ce.forward(s, y), rel=1e-12)
    # fused gradient == Jacobian path (eq. 4) applied to the probability gradient
    fused = ce.backward_from_logits(z, y)
    jacobian_path = sm.backward(z, s, ce.backward(s, y))
    np.testing.assert_allclose(fused, jacobian_path, rtol=0, atol=1e-10)
    # and == finite differences of the fused forward
    np.testing.assert_allclose(fused, numerical_grad_of(lambda zz: ce.forward_from_logits(zz, y), z),
                               rtol=1e-7, atol=1e-10)
    if target_kind != "soft":
        np.testing.assert_allclose(fused, (s - L.one_hot(labels, k, np.float64)) / n, atol=1e-15)


def test_softmax_then_mse_through_the_jacobian():
    """The seed's own pairing: softmax output + MSE, gradient w.r.t. the logits."""
    rng = np.random.default_rng(7)
    z, labels = rng.standard_normal((3, 4)), np.array([0, 3, 1])
    sm, mse = activations.Softmax(), L.MeanSquaredError()
    s = sm.forward(z)
    got = sm.backward(z, s, mse.backward(s, labels))
    expected = numerical_grad_of(lambda zz: mse.forward(activations.softmax(zz), labels), z)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_path_stable_at_1e4(dtype):
    z = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], dtype=dtype)
    ce = L.CrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        # item 0 predicts its class with certainty (loss 0), item 1's class has logit -1e4
        # against a max of 1e4 (loss 2e4)
        assert ce.forward_from_logits(z, np.array([0, 1])) == pytest.approx(1e4, rel=1e-6)
        grad = ce.backward_from_logits(z, np.array([0, 1]))
        onehot = ce.backward_from_logits(z, L.one_hot(np.array([0, 1]), 3, dtype))
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, np.array([[0, 0, 0], [1, -1, 0]], dtype=dtype) / 2)
    np.testing.assert_array_equal(onehot, grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_path_clamps_zero(dtype):
    p = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    y = np.array([0, 0])
    ce = L.CrossEntropy()
    eps = {np.float32: 1e-7, np.float64: 1e-12}[dtype]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = ce.forward(p, y)
        grad = ce.backward(p, y)
    assert value == pytest.approx(-math.log(eps) / 2, rel=1e-5)
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    assert grad[0, 0] == pytest.approx(-1 / (2 * eps), rel=1e-5)  # still pushes the true class up
    assert ce.forward(p, y) == L.CrossEntropy(eps=eps).forward(p, y)
    assert L.CrossEntropy(eps=0.01).forward(p, y) == pytest.approx(-math.log(0.01) / 2, rel=1e-6)


def test_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    z, y = rng.standard_normal((6, 10)) * 4, rng.integers(0, 10, size=6)
    zt = torch.from_numpy(z).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(zt, torch.from_numpy(y))
    loss.backward()
    ce = L.CrossEntropy()
    assert ce.forward_from_logits(z, y) == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward_from_logits(z, y), zt.grad.numpy(), atol=1e-14)


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_float32_in_float32_out(loss_name):
    rng = np.random.default_rng(9)
    p = probabilities(rng, 3, 4)
    y = np.array([1, 2, 3])
    loss = L.get(loss_name)
    g32 = loss.backward(p.astype(np.float32), y)
    assert g32.dtype == np.float32 and g32.shape == p.shape
    np.testing.assert_allclose(g32, loss.backward(p, y), rtol=1e-6)
    assert isinstance(loss.forward(p.astype(np.float32), y), float)
    assert loss.forward(p.astype(np.float32), y) == pytest.approx(loss.forward(p, y), rel=1e-6)


def test_one_hot():
    np.testing.assert_array_equal(L.one_hot(np.array([2, 0, 1]), 3),
                                  [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert L.one_hot(np.array([1], dtype=np.uint8), 2).dtype == np.float32
    assert L.one_hot([1], 2, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match=r"y must hold class ids in \[0, 3\), got 1 value\(s\) out of range, e\.g\. 3"):
        L.one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\).*e\.g\. -1"):
        L.one_hot(np.array([-1, 0]), 3)
    with pytest.raises(TypeError, match=r"y must hold integer class ids .*got dtype float64"):
        L.one_hot(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match=r"y must be integer class ids of shape \(N,\), got shape \(2, 1\)"):
        L.one_hot(np.array([[0], [1]]), 3)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 1, got 0"):
        L.one_hot(np.array([0]), 0)
    with pytest.raises(TypeError, match=r"num_classes must be an int >= 1, got 2.0"):
        L.one_hot(np.array([0]), 2.0)


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_label_validation(loss_name):
    loss = L.get(loss_name)
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"y_true must hold class ids in \[0, 3\)"):
        loss.forward(p, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"y_true has 3 labels but y_pred has 2 rows"):
        loss.backward(p, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y_true of shape \(N, classes\) must match y_pred's shape \(2, 3\), got \(2, 4\)"):
        loss.forward(p, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"y_true must be class ids of shape \(N,\) or targets of shape \(N, classes\), got shape \(2, 3, 1\)"):
        loss.forward(p, np.zeros((2, 3, 1)))
    with pytest.raises(TypeError, match=r"y_true must hold integer class ids.*got dtype float64"):
        loss.forward(p, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"y_pred must have dtype float32 or float64, got int64"):
        loss.forward(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"y_pred must have shape \(N, classes\).*got shape \(3,\)"):
        loss.forward(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y_pred must have shape \(N, classes\).*got shape \(0, 3\)"):
        loss.forward(np.zeros((0, 3)), np.array([], dtype=np.int64))


def test_logits_validation_names_z():
    ce = L.CrossEntropy()
    with pytest.raises(ValueError, match=r"y_true has 1 labels but z has 2 rows"):
        ce.backward_from_logits(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError, match=r"y_true must hold class ids in \[0, 3\)"):
        ce.forward_from_logits(np.zeros((2, 3)), np.array([0, 5]))


def test_get_and_config():
    assert isinstance(L.get("mse"), L.MeanSquaredError)
    assert isinstance(L.get("mean_squared_error"), L.MeanSquaredError)
    assert isinstance(L.get("cross_entropy"), L.CrossEntropy)
    assert isinstance(L.get("categorical_crossentropy"), L.CrossEntropy)
    ce = L.CrossEntropy(eps=1e-6)
    assert L.get(ce) is ce
    assert L.get(ce.get_config()) == ce
    assert L.get(L.MeanSquaredError().get_config()) == L.MeanSquaredError()
    assert L.CrossEntropy.has_logits_path and not L.MeanSquaredError.has_logits_path
    with pytest.raises(ValueError, match=r"loss must be one of .*got 'hinge'"):
        L.get("hinge")
    with pytest.raises(ValueError, match=r"keys \['eps'\] that MeanSquaredError does not take"):
        L.get({"name": "mse", "eps": 0.1})
    with pytest.raises(TypeError, match=r"loss must be a name, a config dict or a Loss, got None"):
        L.get(None)
    with pytest.raises(ValueError, match=r"eps must be a finite number in \(0.0, 0.5\), got 0.0"):
        L.CrossEntropy(eps=0.0)


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_check_output_shape(loss_name):
    loss = L.get(loss_name)
    loss.check_output_shape((10,))
    loss.check_output_shape([1])
    for shape in [(), (2, 3, 3), (10, 1)]:
        dims = ", ".join(["N"] + [str(d) for d in shape])
        with pytest.raises(ValueError, match=rf"^the {loss_name} loss needs outputs of shape \(N, classes\), "
                                             rf"got \({dims}\)$"):
            loss.check_output_shape(shape)
    L.Loss().check_output_shape((2, 3, 3))  # the base class accepts any shape
