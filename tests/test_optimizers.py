"""Optimizers and schedules: updates against hand-written reference loops (and torch.optim when
available), no allocation after the first step, bit-identical continuation after a
state_dict round trip through np.savez, schedule values, validation errors."""

import io
import math
import tracemalloc

import numpy as np
import pytest

from cnn import optimizers as O
from cnn import schedules as S

SHAPES = [(3, 4), (4,), (2, 1, 3, 3)]


def make_problem(seed, dtype=np.float64, steps=6):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def reference_sgd(params, grad_seq, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD's update (dampening 0), written out plainly."""
    params = [p.copy() for p in params]
    velocity = [None] * len(params)
    for grads in grad_seq:
        for i, g in enumerate(grads):
            d = g + weight_decay * params[i]
            if momentum:
                velocity[i] = d.copy() if velocity[i] is None else momentum * velocity[i] + d
                d = d + momentum * velocity[i] if nesterov else velocity[i]
            params[i] = params[i] - lr * d
    return params


def reference_adam(params, grad_seq, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Kingma & Ba's Adam with bias-corrected moments (L2 weight decay in the gradient)."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grad_seq, start=1):
        for i, g in enumerate(grads):
            g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


SGD_CASES = [
    dict(),
    dict(weight_decay=0.01),
    dict(momentum=0.9),
    dict(momentum=0.9, weight_decay=0.05),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.8, nesterov=True, weight_decay=0.05),
]
ADAM_CASES = [dict(), dict(beta1=0.5, beta2=0.9, eps=1e-3), dict(weight_decay=0.1)]


def run(opt, params, grad_seq):
    params = [p.copy() for p in params]
    for grads in grad_seq:
        opt.step(params, grads)
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_matches_reference(kwargs, dtype):
    params, grad_seq = make_problem(0, dtype)
    got = run(O.SGD(lr=0.1, **kwargs), params, grad_seq)
    expected = reference_sgd(params, grad_seq, 0.1, **kwargs)
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_adam_matches_reference(kwargs, dtype):
    params, grad_seq = make_problem(1, dtype)
    got = run(O.Adam(lr=0.01, **kwargs), params, grad_seq)
    expected = reference_adam(params, grad_seq, 0.01, **kwargs)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)


def test_adam_first_step_is_lr_times_sign():
    # m_hat = g and v_hat = g^2 after one step, so the update is lr * g / (|g| + eps)
    p = np.array([1.0, 2.0, -3.0])
    g = np.array([0.5, -4.0, 1e-3])
    opt = O.Adam(lr=0.1, eps=1e-8)
    q = p.copy()
    opt.step([q], [g])
    np.testing.assert_allclose(q, p - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)


def test_momentum_by_hand():
    # v1 = g1, p1 = p0 - lr g1; v2 = mu v1 + g2, p2 = p1 - lr v2
    p0, g1, g2 = np.array([1.0]), np.array([2.0]), np.array([-1.0])
    opt = O.SGD(lr=0.5, momentum=0.5)
    p = p0.copy()
    opt.step([p], [g1])
    assert p[0] == 0.0
    opt.step([p], [g2])
    assert p[0] == 0.0 - 0.5 * (0.5 * 2.0 - 1.0)
    # Nesterov: d = g + mu v
    opt = O.SGD(lr=0.5, momentum=0.5, nesterov=True)
    p = p0.copy()
    opt.step([p], [g1])
    assert p[0] == 1.0 - 0.5 * (2.0 + 0.5 * 2.0)


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_matches_torch_optim(opt_kind):
    torch = pytest.importorskip("torch")
    params, grad_seq = make_problem(2)
    if opt_kind == "sgd":
        ours = O.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
        def make(ps):
            return torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    else:
        ours = O.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01)
        def make(ps):
            return torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = make(tparams)
    for grads in grad_seq:
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    got = run(ours, params, grad_seq)
    for g, tp in zip(got, tparams):
        np.testing.assert_allclose(g, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("opt", [
    O.SGD(lr=0.1), O.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    O.Adam(weight_decay=0.1)], ids=repr)
def test_grads_untouched_and_no_allocation_after_first_step(opt):
    rng = np.random.default_rng(3)
    params = [rng.standard_normal((512, 256)), rng.standard_normal(1000)]  # 1 MiB + 8 KB
    grads = [rng.standard_normal(p.shape) for p in params]
    saved = [g.copy() for g in grads]
    opt.step(params, grads)
    for g, s in zip(grads, saved):
        np.testing.assert_array_equal(g, s)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(3):
            opt.step(params, grads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 64 * 1024, f"step allocated {peak - before} bytes"


def roundtrip_npz(state):
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda: O.SGD(lr=S.StepLR(0.1, step_size=2, gamma=0.5), momentum=0.9, nesterov=True,
                  weight_decay=1e-3),
    lambda: O.SGD(lr=0.1),
    lambda: O.Adam(lr=S.CosineLR(0.01, total_epochs=5, min_lr=1e-4), weight_decay=1e-3),
], ids=["sgd-nesterov-step", "sgd-plain", "adam-cosine"])
def test_state_dict_round_trip_continues_bit_identically(make, dtype):
    params, grad_seq = make_problem(4, dtype, steps=8)
    a = make()
    pa = [p.copy() for p in params]
    for k, grads in enumerate(grad_seq[:3]):
        a.set_epoch(k)
        a.step(pa, grads)
    state = roundtrip_npz(a.state_dict())
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    b = O.get(a.get_config())
    assert type(b) is type(a) and b.get_config() == a.get_config()
    b.load_state_dict(state)
    assert (b.iterations, b.epoch, b.lr) == (a.iterations, a.epoch, a.lr)
    pb = [p.copy() for p in pa]
    for k, grads in enumerate(grad_seq[3:], start=3):
        a.set_epoch(k)
        b.set_epoch(k)
        a.step(pa, grads)
        b.step(pb, grads)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])


def test_state_dict_contents_are_copies():
    opt = O.Adam()
    p, g = [np.ones(3)], [np.ones(3)]
    opt.step(p, g)
    state = opt.state_dict()
    assert set(state) == {"iterations", "epoch", "m.0", "v.0"}
    assert int(state["iterations"]) == 1
    m = state["m.0"].copy()
    opt.step(p, g)
    np.testing.assert_array_equal(state["m.0"], m)
    assert opt.iterations == 2


def test_load_state_dict_errors():
    opt = O.SGD(lr=0.1, momentum=0.9)
    opt.step([np.ones(3), np.ones(2)], [np.ones(3), np.ones(2)])
    good = opt.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['velocity.0'\] and unexpected keys \[\]"):
        O.SGD(lr=0.1, momentum=0.9).load_state_dict({k: v for k, v in good.items() if k != "velocity.0"})
    with pytest.raises(ValueError, match=r"state holds buffers for 1 parameters, this optimizer's state has 2"):
        opt.load_state_dict({k: v for k, v in good.items() if k != "velocity.1"})
    with pytest.raises(ValueError, match=r"missing keys \[\] and unexpected keys \['m.0'\]"):
        O.SGD(lr=0.1, momentum=0.9).load_state_dict({**good, "m.0": np.ones(3)})
    with pytest.raises(ValueError, match=r"missing keys \['epoch'\]"):
        O.SGD(lr=0.1, momentum=0.9).load_state_dict({k: v for k, v in good.items() if k != "epoch"})
    with pytest.raises(ValueError, match=r"unexpected keys \['velocity.0', 'velocity.1'\]"):
        O.SGD(lr=0.1).load_state_dict(good)
    with pytest.raises(ValueError, match=r"state\['velocity.0'\] has shape \(4,\).*this optimizer's "
                                         r"state has shape \(3,\)"):
        opt.load_state_dict({**good, "velocity.0": np.ones(4)})
    with pytest.raises(ValueError, match=r"state\['iterations'\] must be a non-negative integer scalar"):
        O.SGD(lr=0.1, momentum=0.9).load_state_dict({**good, "iterations": np.array(1.5)})
    with pytest.raises(TypeError, match=r"state must be a dict of arrays, got list"):
        opt.load_state_dict([])
    # a fresh optimizer takes the state, then checks it against the params at the next step
    fresh = O.SGD(lr=0.1, momentum=0.9)
    fresh.load_state_dict(good)
    with pytest.raises(ValueError, match=r"params\[1\] has shape \(5,\).*'velocity.1' has shape \(2,\)"):
        fresh.step([np.ones(3), np.ones(5)], [np.ones(3), np.ones(5)])


def test_step_validation():
    opt = O.SGD(lr=0.1)
    with pytest.raises(ValueError, match=r"same length, got 2 params and 1 grads"):
        opt.step([np.ones(2), np.ones(3)], [np.ones(2)])
    with pytest.raises(ValueError, match=r"grads\[0\] must have the shape of params\[0\] \(2,\), got \(3,\)"):
        opt.step([np.ones(2)], [np.ones(3)])
    with pytest.raises(TypeError, match=r"grads\[0\] must have the dtype of params\[0\] \(float64\), got float32"):
        opt.step([np.ones(2)], [np.ones(2, dtype=np.float32)])
    with pytest.raises(TypeError, match=r"params\[0\] must be a float32 or float64 ndarray, got int64"):
        opt.step([np.ones(2, dtype=np.int64)], [np.ones(2, dtype=np.int64)])
    with pytest.raises(TypeError, match=r"params must be a list of arrays, got ndarray"):
        opt.step(np.ones(2), [np.ones(2)])
    readonly = np.ones(2)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] must be writeable"):
        opt.step([readonly], [np.ones(2)])
    opt.step([np.ones(2)], [np.ones(2)])
    with pytest.raises(ValueError, match=r"params must be the 1 arrays this optimizer was stepped with"):
        opt.step([np.ones(2), np.ones(2)], [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match=r"params\[0\] has shape \(3,\) and dtype float64, but"):
        opt.step([np.ones(3)], [np.ones(3)])
    assert opt.iterations == 1


@pytest.mark.parametrize("call, exc, message", [
    (lambda: O.SGD(lr=0.0), ValueError, r"lr must be a finite number in \(0.0, inf\), got 0.0"),
    (lambda: O.SGD(lr=-1), ValueError, r"lr must be .* got -1.0"),
    (lambda: O.SGD(lr=float("nan")), ValueError, r"lr must be .* got nan"),
    (lambda: O.SGD(lr=True), TypeError, r"lr must be a real number, got True"),
    (lambda: O.SGD(lr="0.1"), TypeError, r"lr must be a real number, got '0.1' of type str"),
    (lambda: O.SGD(momentum=1.0), ValueError, r"momentum must be a finite number in \[0.0, 1.0\), got 1.0"),
    (lambda: O.SGD(momentum=-0.1), ValueError, r"momentum must be .* got -0.1"),
    (lambda: O.SGD(nesterov=True), ValueError, r"nesterov=True requires momentum > 0, got momentum=0.0"),
    (lambda: O.SGD(momentum=0.9, nesterov=1), TypeError, r"nesterov must be a bool, got 1"),
    (lambda: O.SGD(weight_decay=-1e-4), ValueError, r"weight_decay must be .* got -0.0001"),
    (lambda: O.Adam(beta1=1.0), ValueError, r"beta1 must be a finite number in \[0.0, 1.0\), got 1.0"),
    (lambda: O.Adam(beta2=-0.5), ValueError, r"beta2 must be .* got -0.5"),
    (lambda: O.Adam(eps=0.0), ValueError, r"eps must be a finite number in \(0.0, inf\), got 0.0"),
    (lambda: O.get("rmsprop"), ValueError, r"optimizer must be one of \['adam', 'sgd'\], got 'rmsprop'"),
    (lambda: O.get({"name": "sgd", "betas": 1}), ValueError, r"optimizer config .* does not fit SGD"),
    (lambda: O.get(0.1), TypeError, r"optimizer must be a name, a config dict or an Optimizer, got 0.1"),
    (lambda: O.SGD().set_epoch(-1), ValueError, r"epoch must be an int >= 0, got -1"),
])
def test_constructor_validation(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_lr_follows_schedule_and_setter():
    opt = O.SGD(lr=S.StepLR(0.1, step_size=2, gamma=0.5), momentum=0.5)
    assert opt.lr == 0.1
    opt.set_epoch(2)
    assert opt.lr == 0.05
    p = [np.array([1.0])]
    opt.step(p, [np.array([1.0])])
    assert p[0][0] == 1.0 - 0.05  # the step used the scheduled rate
    opt.lr = 0.3
    assert opt.lr == 0.3 and opt.get_config()["lr"] == 0.3
    opt.set_epoch(7)
    assert opt.lr == 0.3
    assert O.SGD(lr={"name": "exponential", "lr": 0.2, "gamma": 0.5}).schedule == S.ExponentialLR(0.2, 0.5)


def test_get_and_config():
    assert isinstance(O.get("sgd"), O.SGD) and O.get("sgd").lr == 0.01
    assert isinstance(O.get("Adam"), O.Adam) and O.get("adam").lr == 0.001
    opt = O.Adam(lr=0.002, beta1=0.8, weight_decay=0.1)
    assert O.get(opt) is opt
    config = opt.get_config()
    assert config == {"name": "adam", "lr": 0.002, "beta1": 0.8, "beta2": 0.999, "eps": 1e-8,
                      "weight_decay": 0.1}
    assert O.Adam.from_config(config).get_config() == config
    with pytest.raises(ValueError, match=r"config 'name' must be 'sgd' for SGD, got 'adam'"):
        O.SGD.from_config(config)


# -- schedules ---------------------------------------------------------------------------

def test_schedule_values():
    assert [S.ConstantLR(0.3)(e) for e in (0, 5)] == [0.3, 0.3]
    step = S.StepLR(0.1, step_size=3, gamma=0.5)
    assert [step(e) for e in range(8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2, rel=1e-15)
    cos = S.CosineLR(0.1, total_epochs=4, min_lr=0.02)
    expected = [0.02 + 0.08 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [cos(e) for e in range(4)] == pytest.approx(expected, rel=1e-15)
    assert cos(0) == 0.1 and cos(2) == pytest.approx(0.06) and cos(4) == 0.02 and cos(100) == 0.02
    exp = S.ExponentialLR(0.1, gamma=0.9)
    assert exp(0) == 0.1 and exp(3) == pytest.approx(0.0729, rel=1e-14)


def test_schedule_get_and_validation():
    for sched in (S.ConstantLR(0.1), S.StepLR(0.1, 2), S.CosineLR(0.1, 10, 0.01), S.ExponentialLR(0.1, 0.95)):
        config = sched.get_config()
        assert S.get(config) == sched and S.get(sched) is sched
        assert all(isinstance(v, (str, int, float)) for v in config.values())
    assert S.get(0.5) == S.ConstantLR(0.5)
    with pytest.raises(ValueError, match=r"schedule config 'name' must be one of .*got 'linear'"):
        S.get({"name": "linear", "lr": 0.1})
    with pytest.raises(ValueError, match=r"does not fit StepLR"):
        S.get({"name": "step", "lr": 0.1})
    with pytest.raises(ValueError, match=r"step_size must be an int >= 1, got 0"):
        S.StepLR(0.1, 0)
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \(0.0, 1.0\], got 1.5"):
        S.ExponentialLR(0.1, 1.5)
    with pytest.raises(ValueError, match=r"min_lr must be a finite number in \[0.0, 0.1\], got 0.2"):
        S.CosineLR(0.1, 5, min_lr=0.2)
    with pytest.raises(TypeError, match=r"total_epochs must be an int >= 1, got 2.5"):
        S.CosineLR(0.1, 2.5)
    with pytest.raises(TypeError, match=r"epoch must be an int >= 0, got 1.5"):
        S.ConstantLR(0.1)(1.5)
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0, got -2"):
        S.StepLR(0.1, 2)(-2)


# ----------------------------------------------------------------------------- fused SGD kernel


def numpy_sgd_step(p, g, v, lr, momentum, nesterov, weight_decay):
    """SGD in NumPy steps, each rounded as the fused kernel must round it (the oracle the
    library's NumPy path used to be)."""
    d = g
    if weight_decay:
        d = p * weight_decay
        d += g
    if momentum:
        v *= momentum
        v += d
        if nesterov:
            t = v * momentum
            t += d
            d = t
        else:
            d = v
    p -= d * lr


def numpy_adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam in NumPy steps with the kernel's rounding (scalar factors in double precision)."""
    d = g
    if weight_decay:
        d = p * weight_decay
        d += g
    m *= beta1
    m += d * (1.0 - beta1)
    v *= beta2
    t = d * d
    t *= 1.0 - beta2
    v += t
    t = np.sqrt(v)
    t /= math.sqrt(1.0 - beta2 ** step)
    t += eps
    t = m / t
    t *= lr / (1.0 - beta1 ** step)
    p -= t


def numpy_steps(opt, params, grads_seq, epochs):
    """Run ``opt``'s maths with the NumPy oracles over ``grads_seq`` (per epoch, per step)."""
    bufs = {b: [np.zeros_like(p) for p in params] for b in ("velocity", "m", "v")}
    step = 0
    for epoch in range(epochs):
        lr = opt.schedule(epoch)
        for grads in grads_seq[epoch]:
            step += 1
            for i, (p, g) in enumerate(zip(params, grads)):
                if isinstance(opt, O.SGD):
                    numpy_sgd_step(p, g, bufs["velocity"][i], lr, opt.momentum, opt.nesterov,
                                   opt.weight_decay)
                else:
                    numpy_adam_step(p, g, bufs["m"][i], bufs["v"][i], step, lr, opt.beta1,
                                    opt.beta2, opt.eps, opt.weight_decay)


def assert_fused_equals_numpy_steps(make, dtype, seed, epochs=2, steps=3):
    """The one-pass kernel (on C-contiguous params, and through a copy on Fortran-ordered ones)
    rounds each product, sum, square root and quotient as the NumPy steps do: the three must
    agree bit for bit."""
    rng = np.random.default_rng(seed)
    shapes = [(300, 200), (7,), (8, 4, 3, 3)]
    params_c = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params_f = [np.array(p, order="F", copy=True) for p in params_c]  # 1-D: a copy too
    params_np = [p.copy() for p in params_c]
    assert not params_f[0].flags.c_contiguous
    opt_c, opt_f = make(), make()
    grads_seq = [[[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
                 for _ in range(epochs)]
    for epoch in range(epochs):
        opt_c.set_epoch(epoch)
        opt_f.set_epoch(epoch)
        for grads in grads_seq[epoch]:
            opt_c.step(params_c, grads)
            opt_f.step(params_f, grads)
    numpy_steps(make(), params_np, grads_seq, epochs)
    for a, b, c in zip(params_c, params_f, params_np):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_fused_kernel_equals_numpy_steps_bit_for_bit(kwargs, dtype):
    assert_fused_equals_numpy_steps(lambda: O.SGD(lr=0.05, **kwargs), dtype, seed=11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_adam_fused_kernel_equals_numpy_steps_bit_for_bit(kwargs, dtype):
    assert_fused_equals_numpy_steps(
        lambda: O.Adam(lr=S.StepLR(0.01, step_size=1, gamma=0.5), **kwargs), dtype, seed=13)


def test_a_fortran_ordered_param_is_updated_in_place():
    """A Fortran-ordered param (updated through a C copy), then a C-ordered one of the same
    shape: the momentum buffer is updated in place either way."""
    p_f = np.asfortranarray(np.ones((4, 3)))
    opt = O.SGD(lr=0.1, momentum=0.9)
    opt.step([p_f], [np.ones((4, 3))])
    np.testing.assert_array_equal(p_f, np.full((4, 3), 0.9))
    v = opt._state["velocity"][0]
    p_c = np.ascontiguousarray(p_f)
    opt.step([p_c], [np.ones((4, 3))])
    np.testing.assert_array_equal(v, np.full((4, 3), 1.9))       # 0.9 * 1 + 1, in place
    np.testing.assert_array_equal(p_c, np.full((4, 3), 1 - 0.1 - 0.19))


def test_sgd_fused_kernel_thread_count_invariant():
    import cnn
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal((1000, 300)).astype(np.float32)   # big enough for two threads
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(3)]
    old = cnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            cnn.set_num_threads(threads)
            p = p0.copy()
            for opt in (O.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                        O.Adam(lr=0.01, weight_decay=1e-4)):
                for g in grads:
                    opt.step([p], [g])
            results.append(p)
    finally:
        cnn.set_num_threads(old)
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_functional_sgd_update_validation():
    from cnn import functional as F
    p = np.zeros((3, 4), np.float32)
    g = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="p must be a float32 or float64 ndarray"):
        F.sgd_update(p.astype(np.int32), g)
    with pytest.raises(ValueError, match="p must be C-contiguous and writeable"):
        F.sgd_update(np.asfortranarray(p), g)
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="p must be C-contiguous and writeable"):
        F.sgd_update(ro, g)
    with pytest.raises(ValueError, match="g must have the shape of p"):
        F.sgd_update(p, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="g has dtype float64"):
        F.sgd_update(p, g.astype(np.float64))
    with pytest.raises(ValueError, match="v must have the shape of p"):
        F.sgd_update(p, g, v=np.zeros(12, np.float32), momentum=0.9)
    with pytest.raises(ValueError, match="need a momentum buffer v"):
        F.sgd_update(p, g, nesterov=True)
    with pytest.raises(ValueError, match="need a momentum buffer v"):
        F.sgd_update(p, g, momentum=0.9)      # never a silent plain-SGD step
    F.sgd_update(p, g, lr=0.5)
    np.testing.assert_array_equal(p, np.full((3, 4), -0.5, np.float32))
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(ValueError, match="adam_update needs both moment buffers"):
        F.adam_update(p, g, m, None, step=1)
    with pytest.raises(ValueError, match="m must have the shape of p"):
        F.adam_update(p, g, m.reshape(4, 3), v, step=1)
    with pytest.raises(TypeError, match="v has dtype float64"):
        F.adam_update(p, g, m, v.astype(np.float64), step=1)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        F.adam_update(p, g, m, v, step=0)
    with pytest.raises(TypeError):
        F.adam_update(p, g, m, v, step=1.5)
    F.adam_update(p, g, m, v, step=1, lr=0.1)    # first step: p moves by lr * sign(g)
    np.testing.assert_allclose(p, np.full((3, 4), -0.6, np.float32), rtol=1e-6)
