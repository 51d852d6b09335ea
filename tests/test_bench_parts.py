"""The parts of ``cnn.bench``: the per-layer breakdown through the model's layer hooks, the
memory probes run as scripts, the layer spec the other backends build from, and the FLOP
counts. No timing value is asserted: only that the parts of a step fit inside it."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

from cnn import models
from cnn.bench import breakdown, memory, nets
from cnn.bench.flops import model_flops

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _batches(rng, n, batch):
    return [(rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch))
            for _ in range(n)]


@pytest.mark.parametrize("key", ["cnn", "mlp"])
@pytest.mark.parametrize("training", [True, False])
def test_breakdown_parts_fit_in_the_step(key, training, rng):
    model = nets.build(key, 0)
    n = len(model.layers)
    s = breakdown.cnn_layer_samples(model, _batches(rng, 3, 8), training, reps=4, warmups=1)
    assert s["forward"].shape == s["backward"].shape == (4, n)
    assert s["step"].shape == s["loss"].shape == s["optimizer"].shape == (4,)
    assert (s["forward"] > 0).all()  # every layer ran forward in every step
    parts = s["forward"].sum(axis=1) + s["backward"].sum(axis=1) + s["loss"] + s["optimizer"]
    assert (parts <= s["step"]).all(), (parts, s["step"])
    if training:
        assert (s["loss"] > 0).all() and (s["optimizer"] > 0).all()
        reached = [i for i, layer in enumerate(model.layers)
                   if any(lay.params for lay in model.layers[:i + 1])]
        assert (s["backward"][:, reached] > 0).all()
        # Nothing before the first layer with weights is reached by the backward pass.
        unreached = sorted(set(range(n)) - set(reached))
        assert (s["backward"][:, unreached] == 0).all()
        assert unreached == ([] if key == "cnn" else [0])  # the MLP's Flatten
    else:
        assert not s["backward"].any() and not s["loss"].any() and not s["optimizer"].any()
    rows = breakdown.cnn_breakdown(model, _batches(rng, 2, 8), training, reps=2, warmups=1)
    labels = [breakdown.layer_label(layer) for layer in model.layers]
    assert [r["layer"] for r in rows[:n]] == labels  # every layer appears, in order
    extra = ["loss (softmax cross-entropy)", "optimizer (SGD momentum)"] if training else []
    assert [r["layer"] for r in rows[n:]] == extra


def test_breakdown_times_the_real_step(rng):
    """The hooked steps are the model's own: the weights after them equal those of plain
    ``train_step`` calls on the same batches, and the hook is gone afterwards."""
    batches = _batches(rng, 3, 8)
    timed, plain = nets.build("cnn", 0), nets.build("cnn", 0)
    breakdown.cnn_layer_samples(timed, batches, True, reps=3, warmups=2)
    for r in range(5):
        plain.train_step(*batches[r % 3])
    for a, b in zip(timed.params, plain.params):
        np.testing.assert_array_equal(a, b)
    events = []
    timed.register_layer_hook(lambda event, index, layer: events.append(event))
    timed.predict(batches[0][0])
    assert len(events) == 2 * len(timed.layers)  # only this hook is left


def _probe(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env(), **kw)


def _check_probe_output(proc, steps):
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(data["times"]) == steps and all(t > 0 for t in data["times"])
    assert 0 < data["import_rss"] <= data["peak_rss"]


def test_cnn_memory_probe_runs_as_a_module(tmp_path):
    proc = _probe([sys.executable, "-m", "cnn.bench.memory_cnn", "--batch", "4", "--steps", "3",
                   "--threads", "1"], cwd=tmp_path)
    _check_probe_output(proc, 3)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_memory_probe_runs_without_importing_cnn(tmp_path):
    cmd = memory.probe_command("torch", batch=4, steps=2, threads=1)
    assert cmd[1].endswith(os.path.join("cnn", "bench", "memory_torch.py"))
    proc = _probe([cmd[0], "-X", "importtime"] + cmd[1:], cwd=tmp_path)
    _check_probe_output(proc, 2)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "torch" in imported
    assert not {m for m in imported if m == "cnn" or m.startswith("cnn.")}, sorted(imported)
    # the bench's own helpers came from that folder, as top-level modules
    assert {"common", "torch_backend"} <= imported


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0", "--steps", "1", "--threads", "1"], "--batch must be >= 1, got 0"),
    (["--batch", "2", "--steps", "1"], "the following arguments are required: --threads"),
    (["--batch", "2", "--steps", "1", "--threads", "1", "--model", "resnet"], "invalid choice"),
])
def test_cnn_memory_probe_bad_arguments(argv, message, tmp_path):
    proc = _probe([sys.executable, "-m", "cnn.bench.memory_cnn"] + argv, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("spec, message", [
    ("[", "--spec must be JSON"),
    ("{}", "--spec must be a non-empty JSON list"),
    ('[{"type": "Conv2D"}]', "--spec: a layer entry lacks or has a bad field: KeyError"),
])
def test_torch_memory_probe_bad_spec(spec, message, tmp_path):
    cmd = memory.probe_command("torch", batch=2, steps=1, threads=1)
    cmd[cmd.index("--spec") + 1] = spec
    proc = _probe(cmd, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_layer_spec_is_json_without_weights():
    model = nets.build("cnn", 0)
    spec = nets.layer_spec(model, weights=False)
    assert json.loads(json.dumps(spec))[0]["pads"] == [1, 1, 1, 1]
    assert [e["type"] for e in spec] == [type(layer).__name__ for layer in model.layers]
    assert not any("params" in e for e in spec)
    with_weights = nets.layer_spec(model)
    got = [p for e in with_weights for p in e.get("params", [])]
    assert len(got) == len(model.params)
    for a, b in zip(got, model.params):
        np.testing.assert_array_equal(a, b)
        assert a is not b  # copies


def test_layer_spec_refuses_what_other_backends_cannot_run():
    from cnn import Input, Model, Sequential, layers
    from cnn.bench.common import Skip
    shared = layers.Dense(8, activation="relu")
    inputs = Input((8,))
    twice = Model(inputs, layers.Dense(3, activation="softmax")(shared(shared(inputs)))).compile()
    with pytest.raises(Skip, match="called more than once"):
        nets.layer_spec(twice)
    early = Sequential([layers.Dense(4, activation="softmax"), layers.Dense(3)],
                       input_shape=(5,)).compile()
    with pytest.raises(Skip, match="softmax is only supported on the last layer"):
        nets.layer_spec(early)
    mlp = models.build("seed-mlp", seed=0).compile(loss="mse")
    with pytest.raises(Skip, match="softmax output and cross-entropy"):
        nets.layer_spec(mlp)
    with pytest.raises(Skip, match="optimizer Adam"):
        nets.optimizer_spec(models.build("lenet5", seed=0).compile(optimizer="adam"))
    with pytest.raises(ValueError, match="bench model must be one of 'cnn', 'mlp', .*got 'bn4'"):
        nets.build("bn4")


def _perturb(model, rng):
    """Weights and BatchNorm statistics away from their starting values (gamma 1, beta 0, mean
    0, variance 1 would hide a swapped or uncopied tensor)."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            for p in layer.params:
                p[...] = rng.uniform(0.5, 1.5, p.shape) if p is layer.params[0] and layer.scale \
                    else rng.uniform(-0.3, 0.3, p.shape)
            mean, var = layer.buffers
            mean[...] = rng.uniform(-0.2, 0.2, mean.shape)
            var[...] = rng.uniform(0.5, 2.0, var.shape)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("name", list(models.MODELS))
def test_torch_translation_predicts_what_cnn_predicts(name, rng):
    """Every zoo model (inference: dropout is the identity) translated layer by layer to
    torch, with its weights and BatchNorm running statistics."""
    import torch

    from cnn.bench.torch_backend import torch_net
    model = models.build(name, seed=2).compile()
    _perturb(model, rng)
    net = torch_net(nets.layer_spec(model), torch).eval()
    assert sum(p.numel() for p in net.parameters()) == model.count_params()
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    # torch in float64 (the same weights, exactly): its float32 result of these small nets moved
    # by 1.1e-5 between two identical CI runs (its CPU kernels' choice), cnn's does not
    with torch.inference_mode():
        want = torch.softmax(net.double()(torch.from_numpy(x).double()), dim=1).numpy()
    np.testing.assert_allclose(model.predict(x), want, rtol=0, atol=1e-5)


def _odd_layers_model():
    """A graph model of the layers the zoo does not use: dilated and grouped convs, padded
    max-pool and average pool (asymmetric "same" pads at stride 2), tanh, sigmoid, leaky ReLU,
    BatchNorm without scale, Concatenate."""
    from cnn import Input, Model, layers
    inputs = Input((4, 9, 9))
    a = layers.Conv2D(6, 3, padding="same", dilation=2, activation="tanh")(inputs)
    b = layers.Conv2D(6, 3, padding="same", groups=2, use_bias=False)(inputs)
    b = layers.BatchNormalization(scale=False, momentum=0.8)(b)
    b = layers.Activation("sigmoid")(b)
    h = layers.Concatenate(axis=0)([a, b])
    h = layers.MaxPool2D(3, stride=2, padding="same")(h)
    h = layers.AvgPool2D(2, stride=2, padding="same")(h)
    h = layers.BatchNormalization(center=False)(layers.Flatten()(h))
    h = layers.Dense(7, activation="leaky_relu")(h)
    return Model(inputs, layers.Dense(3, activation="softmax")(h), seed=4)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_translation_of_the_other_layers(rng):
    import torch

    from cnn.bench.torch_backend import torch_net
    model = _odd_layers_model().compile()
    _perturb(model, rng)
    spec = nets.layer_spec(model)
    assert next(e for e in spec if e["type"] == "AvgPool2D")["pads"] == (0, 1, 0, 1)
    net = torch_net(spec, torch).eval()
    assert sum(p.numel() for p in net.parameters()) == model.count_params()
    x = rng.standard_normal((6, 4, 9, 9)).astype(np.float32)
    # torch in float64 (the same weights, exactly): its float32 result of these small nets moved
    # by 1.1e-5 between two identical CI runs (its CPU kernels' choice), cnn's does not
    with torch.inference_mode():
        want = torch.softmax(net.double()(torch.from_numpy(x).double()), dim=1).numpy()
    np.testing.assert_allclose(model.predict(x), want, rtol=0, atol=1e-5)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("build", [
    lambda: models.build("cnn-bn", seed=3, dropout=0.0),
    lambda: models.build("resnet8", input_shape=(3, 16, 16), seed=3),
    _odd_layers_model,
], ids=["cnn-bn", "resnet8", "other-layers"])
def test_torch_translation_trains_as_cnn_trains(build, rng):
    """Training mode: three SGD-momentum steps in cnn and in the translation give the same
    losses, weights and BatchNorm running statistics (torch's momentum = 1 - cnn's)."""
    import torch

    from cnn import optimizers
    from cnn.bench.torch_backend import torch_net, torch_optimizer
    model = build().compile(loss="cross_entropy",
                            optimizer=optimizers.SGD(lr=0.05, momentum=0.9))
    net = torch_net(nets.layer_spec(model), torch).train()
    optim = torch_optimizer(net, nets.optimizer_spec(model), torch)
    shape = model.input_shape
    for _ in range(3):
        x = rng.standard_normal((8,) + tuple(shape)).astype(np.float32)
        y = rng.integers(0, 3 if shape[0] == 4 else 10, 8)
        loss = model.train_step(x, y)
        optim.zero_grad()
        want = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        want.backward()
        optim.step()
        assert abs(float(loss) - want.item()) <= 1e-5 * max(1.0, abs(want.item()))
    for got, p in zip(model.params, net.parameters(), strict=True):
        np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-4, atol=1e-5)
    got = [b for layer in model.layers for b in getattr(layer, "buffers", [])]
    want = [b.numpy() for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var)]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_design_cnn_flops_by_hand():
    """The stated counts of the module doc, written out for one image of the DESIGN CNN."""
    conv1, conv2 = 2 * 32 * 1 * 9 * 28 * 28, 2 * 64 * 32 * 9 * 14 * 14
    pool1, pool2 = 32 * 14 * 14 * 3, 64 * 7 * 7 * 3
    dense1, dense2 = 2 * 3136 * 128, 2 * 128 * 10
    forward = conv1 + pool1 + conv2 + pool2 + dense1 + dense2
    # backward: conv1 computes no dx; the pools route one add per output
    backward = conv1 + 32 * 14 * 14 + 2 * conv2 + 64 * 7 * 7 + 2 * dense1 + 2 * dense2
    model = nets.build("cnn", 0)
    assert model_flops(model, 1, training=False) == forward
    assert model_flops(model, 16, training=False) == 16 * forward
    assert model_flops(model, 3, training=True) == 3 * (forward + backward)
    assert math.isclose(model_flops(model, 16, False) / 1e6, 136.2, abs_tol=0.05)
