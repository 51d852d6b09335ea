"""The model zoo (``cnn.models``): every model builds for its input shapes with the parameter
count its layers imply, trains a step to a finite loss, and bad arguments are clear errors."""

import math

import numpy as np
import pytest

from cnn import models, train

# Parameter counts written out from the layer shapes (weights + biases), not read from the code.
COUNTS = {
    ("cnn", (1, 28, 28), 10): (32 * 1 * 9 + 32) + (64 * 32 * 9 + 64) + (64 * 7 * 7 * 128 + 128)
                              + (128 * 10 + 10),
    ("seed-mlp", (1, 28, 28), 10): (784 * 512 + 512) + (512 * 10 + 10),
    ("lenet5", (1, 28, 28), 10): (6 * 25 + 6) + (16 * 6 * 25 + 16) + (16 * 5 * 5 * 120 + 120)
                                 + (120 * 84 + 84) + (84 * 10 + 10),
    ("cnn", (3, 32, 32), 7): (32 * 3 * 9 + 32) + (64 * 32 * 9 + 64) + (64 * 8 * 8 * 128 + 128)
                             + (128 * 7 + 7),
    ("seed-mlp", (3, 32, 32), 7): (3072 * 512 + 512) + (512 * 7 + 7),
    ("lenet5", (3, 32, 32), 7): (6 * 3 * 25 + 6) + (16 * 6 * 25 + 16) + (16 * 6 * 6 * 120 + 120)
                                + (120 * 84 + 84) + (84 * 7 + 7),
}


def test_the_known_counts():
    assert COUNTS[("cnn", (1, 28, 28), 10)] == 421_642   # DESIGN.md's CNN
    assert COUNTS[("lenet5", (1, 28, 28), 10)] == 61_706  # LeNet-5's usual count


@pytest.mark.parametrize("name, input_shape, classes", sorted(COUNTS))
def test_builds_with_its_parameter_count(name, input_shape, classes):
    model = models.build(name, input_shape=input_shape, classes=classes, seed=0)
    assert model.built and not model.compiled and model.name == name
    assert model.input_shape == input_shape and model.output_shape == (classes,)
    assert model.count_params() == COUNTS[(name, input_shape, classes)]
    assert sum(p.size for p in model.params) == model.count_params()
    assert model.layers[-1].activation.name == "softmax"


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_trains_a_step(name, rng):
    model = models.build(name, seed=1)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    before = [p.copy() for p in model.params]
    loss = model.train_step(x, y)
    assert math.isfinite(loss) and loss > 0
    assert all(np.isfinite(g).all() for g in model.grads)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.params))  # it updated


def test_design_cnn_is_the_train_default():
    """``python -m cnn.train`` builds ``models.build("cnn")``: DESIGN.md's stack with two
    Dropout(0.25); without dropout the layers and weights are the same but for the Dropouts."""
    model = models.build("cnn", seed=0)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPool2D", "Conv2D", "MaxPool2D", "Flatten", "Dropout", "Dense",
                     "Dropout", "Dense"]
    conv1, conv2, dense1, dense2 = (model.layers[i] for i in (0, 2, 6, 8))
    assert (conv1.filters, conv2.filters, dense1.units, dense2.units) == (32, 64, 128, 10)
    assert conv1.padding == conv2.padding == "same"
    assert [model.layers[i].rate for i in (5, 7)] == [0.25, 0.25]
    plain = models.build("cnn", seed=0, dropout=0)
    assert [type(layer).__name__ for layer in plain.layers] == [k for k in kinds if k != "Dropout"]
    for a, b in zip(model.params, plain.params):
        np.testing.assert_array_equal(a, b)
    assert "Dropout" not in {type(layer).__name__ for layer in models.build("seed-mlp").layers}


def test_seeds_decide_the_weights():
    a, b, c = (models.build("lenet5", seed=s) for s in (3, 3, 4))
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a.params[0], c.params[0])


def test_every_zoo_model_has_cli_defaults():
    assert set(train.DEFAULTS) == set(models.MODELS)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(name="resnet"), ValueError, r"model must be one of 'cnn', 'seed-mlp', 'lenet5', 'cnn-bn', 'bn4', 'resnet8', got 'resnet'"),
    (dict(name=3), ValueError, r"model must be one of .* got 3"),
    (dict(name="cnn", input_shape=(28, 28)), ValueError, r"input_shape must be 3 positive ints \(C, H, W\), got \(28, 28\)"),
    (dict(name="cnn", input_shape=(1, 28.0, 28)), TypeError, r"input_shape must be a tuple of 3 ints"),
    (dict(name="cnn", classes=0), ValueError, r"classes must be an int >= 1, got 0"),
    (dict(name="cnn", classes=2.5), TypeError, r"classes must be an int"),
    (dict(name="cnn", dropout=1.0), ValueError, r"dropout must be a finite number in \[0.0, 1.0\), got 1.0"),
    (dict(name="cnn", dropout="0.5"), TypeError, r"dropout must be a real number"),
    (dict(name="lenet5", dropout=0.1), TypeError, r"model 'lenet5' has no option dropout"),
    (dict(name="cnn", widht=2), TypeError, r"model 'cnn' has no option widht; its options: dropout"),
    (dict(name="lenet5", input_shape=(1, 8, 8)), ValueError,
     r"model 'lenet5' cannot be built for input_shape=\(1, 8, 8\): layer 2 \(Conv2D\)"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        models.build(**kwargs)


def test_train_cli_takes_any_zoo_name(capsys):
    assert train.main(["--model", "lenet5", "--epochs", "1", "--limit", "64", "--batch-size", "32",
                       "--verbose", "0", "--threads", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy: ")
