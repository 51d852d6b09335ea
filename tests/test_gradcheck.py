"""cnn.gradcheck, the public gradient audit: every built-in layer passes, custom layers pass
or are caught (a wrong backward fails in its own row), graph and Sequential models pass without
being modified, the CLI runs on a zoo model, bad arguments are refused with clear errors."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env, distinct_values

import cnn
from cnn import layers
from cnn.gradcheck import GradcheckReport
from cnn.gradcheck.__main__ import main as cli_main

# ----------------------------------------------------------------------------- custom layers


@cnn.register(package="test_gradcheck")
class ChannelScale(layers.Layer):
    """``y[n, c, ...] = x[n, c, ...] * scale[c] + shift[c]`` with its backward written out."""

    param_names = ("scale", "shift")

    def __init__(self):
        super().__init__()
        self._cache = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _create_params(self, rng):
        c = self.input_shape[0]
        self.params = [rng.standard_normal(c).astype(self.dtype), rng.standard_normal(c).astype(self.dtype)]
        self.grads = [np.zeros(c, self.dtype), np.zeros(c, self.dtype)]

    def _expand(self, v):
        return v.reshape((1, -1) + (1,) * (len(self.input_shape) - 1))

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x if training else None
        return x * self._expand(self.params[0]) + self._expand(self.params[1])

    def _weight_grad(self, grad, x):
        axes = (0,) + tuple(range(2, x.ndim))
        return (grad * x).sum(axis=axes), grad.sum(axis=axes)

    def backward(self, grad):
        x = self._cached()
        self._check_grad(grad, x.shape[0])
        dscale, dshift = self._weight_grad(grad, x)
        np.copyto(self.grads[0], dscale)
        np.copyto(self.grads[1], dshift)
        return grad * self._expand(self.params[0]) if self.need_input_grad else None


class ScaleGradOff(ChannelScale):
    """The scale gradient 1% too large: the audit must fail the ``scale`` row only."""

    def _weight_grad(self, grad, x):
        dscale, dshift = super()._weight_grad(grad, x)
        return dscale * 1.01, dshift


class InputTermMissing(ChannelScale):
    """Forward ``x * scale + x**2 / 2 + shift``, backward forgets the ``x`` of ``d(x**2/2)``."""

    def forward(self, x, training=False):
        return super().forward(x, training) + 0.5 * x * x

    def _weight_grad(self, grad, x):
        return super()._weight_grad(grad, x)


class NoisyForward(ChannelScale):
    """Draws from NumPy's global generator: not a function of its inputs."""

    def forward(self, x, training=False):
        return super().forward(x, training) + np.random.random(x.shape)


# ----------------------------------------------------------------------------- built-in layers


def _images(rng, shape=(2, 3, 7, 6)):
    return rng.standard_normal(shape)


LAYER_CASES = {
    "Dense-relu": (lambda: layers.Dense(5, activation="relu"), (3, 7)),
    "Dense-softmax": (lambda: layers.Dense(4, activation="softmax"), (3, 7)),
    "Dense-sigmoid-nobias": (lambda: layers.Dense(4, activation="sigmoid", use_bias=False), (3, 7)),
    "Conv2D-relu-same": (lambda: layers.Conv2D(4, 3, padding="same", activation="relu"), (2, 3, 7, 6)),
    "Conv2D-tanh-stride": (lambda: layers.Conv2D(3, (2, 3), stride=(2, 1), padding=1,
                                                 activation="tanh"), (2, 3, 7, 6)),
    "Conv2D-leaky-valid": (lambda: layers.Conv2D(2, 3, activation="leaky_relu"), (2, 2, 5, 5)),
    "MaxPool2D-tile": (lambda: layers.MaxPool2D(2), (2, 3, 7, 6)),
    "MaxPool2D-overlap": (lambda: layers.MaxPool2D(3, stride=1, padding="valid"), (2, 2, 6, 5)),
    "Flatten": (lambda: layers.Flatten(), (2, 3, 4, 4)),
    "Activation-softmax": (lambda: layers.Activation("softmax"), (3, 6)),
    "Activation-sigmoid": (lambda: layers.Activation("sigmoid"), (2, 3, 4, 4)),
    "Dropout": (lambda: layers.Dropout(0.5), (3, 2, 5, 5)),
    "Conv2D-dilated-grouped": (lambda: layers.Conv2D(4, 3, padding="same", dilation=2, groups=2),
                               (2, 4, 7, 6)),
    "Conv2D-same-stride2": (lambda: layers.Conv2D(3, 3, stride=2, padding="same"), (2, 2, 7, 6)),
    "BatchNormalization-images": (lambda: layers.BatchNormalization(), (4, 3, 5, 5)),
    "BatchNormalization-features": (lambda: layers.BatchNormalization(center=False), (6, 5)),
    "AvgPool2D-same": (lambda: layers.AvgPool2D(3, stride=2, padding="same"), (2, 3, 7, 6)),
    "GlobalAvgPool2D": (lambda: layers.GlobalAvgPool2D(), (2, 3, 5, 4)),
}
MERGE_CASES = {
    "Add": (lambda: layers.Add(), [(2, 3, 4, 4)] * 3),
    "Concatenate": (lambda: layers.Concatenate(axis=0), [(2, 3, 4, 4), (2, 1, 4, 4)]),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_built_in_layer_passes(case, rng, one_thread):
    make, shape = LAYER_CASES[case]
    x = distinct_values(rng, shape) if "MaxPool" in case else rng.standard_normal(shape)
    report = cnn.gradcheck(make(), x, raise_exception=True)
    assert report.passed
    layer = make()
    assert [row.name for row in report.rows] == ["input"] + [
        name for name, _ in layer.param_shapes(shape[1:])]
    assert report["input"].checked == min(np.prod(shape), 200)


@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_multi_input_layers_pass_with_one_row_per_input(case, rng):
    make, shapes = MERGE_CASES[case]
    report = cnn.gradcheck(make(), [rng.standard_normal(s) for s in shapes])
    assert report.passed, report.table()
    assert [row.name for row in report.rows] == [f"input[{i}]" for i in range(len(shapes))]


def test_the_cases_cover_every_built_in_layer_class():
    covered = {type(make()) for make, _ in list(LAYER_CASES.values()) + list(MERGE_CASES.values())}
    built_in = {getattr(layers, name) for name in layers.__all__}
    built_in = {c for c in built_in if isinstance(c, type) and issubclass(c, layers.Layer)
                and c is not layers.Layer}
    assert built_in - covered == set(), "add a gradcheck case for the new layer"


def test_a_dropout_layer_is_checked_with_a_real_mask(rng):
    # rate 0.5: some entries are dropped (zero gradient), the rest scaled by 2; the audit
    # agrees with both only if every forward pass uses the backward's mask
    x = rng.standard_normal((4, 50))
    report = cnn.gradcheck(layers.Dropout(0.5), x)
    assert report.passed, report.table()
    assert report["input"].checked == 200


def test_a_28x28_conv_layer_is_sampled_and_passes(rng, one_thread):
    x = rng.standard_normal((2, 1, 28, 28))
    report = cnn.gradcheck(layers.Conv2D(32, 3), x)
    assert report.passed, report.table()
    row = report["input"]
    assert (row.checked, row.size) == (200, 1568)
    assert np.all(np.diff(row.indices) > 0) and row.indices[-1] < 1568
    assert "200 of 1568" in report.table()
    assert (report["weight"].checked, report["bias"].checked) == (200, 32)
    again = cnn.gradcheck(layers.Conv2D(32, 3), x, max_entries=50)
    other = cnn.gradcheck(layers.Conv2D(32, 3), x, max_entries=50, seed=1)
    assert again["input"].checked == 50
    np.testing.assert_array_equal(
        again["input"].indices, cnn.gradcheck(layers.Conv2D(32, 3), x, max_entries=50)["input"].indices)
    assert not np.array_equal(again["input"].indices, other["input"].indices)


def test_a_float32_layer_is_checked_in_float64_and_left_untouched(rng):
    layer = layers.Conv2D(3, 3, activation="tanh")
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    layer.forward(x)
    before = [p.copy() for p in layer.params]
    report = cnn.gradcheck(layer, x)
    assert report.passed, report.table()
    assert layer.dtype == np.float32 and all(p.dtype == np.float32 for p in layer.params)
    for p, b in zip(layer.params, before, strict=True):
        np.testing.assert_array_equal(p, b)
    # the copy has the layer's weights: with a zero scale dC/dx is exactly 0, both ways
    scaled = ChannelScale()
    scaled.build((2, 5, 5), dtype=np.float32)
    assert cnn.gradcheck(scaled, x)["input"].max_abs_error > 0
    scaled.params[0][:] = 0
    assert cnn.gradcheck(scaled, x)["input"].max_abs_error == 0.0


# ----------------------------------------------------------------------------- custom layers


def test_a_custom_registered_layer_passes(rng):
    report = cnn.gradcheck(ChannelScale(), rng.standard_normal((3, 4, 5, 5)))
    assert report.passed, report.table()
    assert [row.name for row in report.rows] == ["input", "scale", "shift"]


def test_a_gradient_one_percent_off_fails_in_its_own_row(rng):
    report = cnn.gradcheck(ScaleGradOff(), rng.standard_normal((3, 4, 5, 5)))
    assert not report.passed
    assert [row.name for row in report.failed_rows] == ["scale"]
    assert report["scale"].max_rel_error == pytest.approx(0.01 / 1.01, rel=1e-3)
    table = report.table()
    assert "FAILED: scale" in table
    others = [line.split()[-1] for line in table.splitlines() if line.startswith(("input", "shift"))]
    assert others == ["pass"] * 2
    with pytest.raises(AssertionError, match=r"(?s)gradcheck failed.*scale .*FAIL"):
        cnn.gradcheck(ScaleGradOff(), rng.standard_normal((3, 4, 5, 5)), raise_exception=True)


def test_a_missing_input_term_fails_the_input_row(rng):
    report = cnn.gradcheck(InputTermMissing(), rng.standard_normal((2, 3, 4, 4)))
    assert [row.name for row in report.failed_rows] == ["input"]
    worst = report["input"].worst_index
    assert len(worst) == 4


def test_a_forward_that_is_not_a_function_is_refused(rng):
    with pytest.raises(RuntimeError, match="not a function of its inputs"):
        cnn.gradcheck(NoisyForward(), rng.standard_normal((2, 3, 4, 4)))


def test_a_wrong_custom_layer_inside_a_model_fails_in_its_row(rng):
    model = cnn.Sequential([layers.Conv2D(4, 3, activation="tanh"), ScaleGradOff(), layers.Flatten(),
                            layers.Dense(3, activation="softmax")], input_shape=(2, 6, 6), seed=0)
    report = cnn.gradcheck(model, rng.standard_normal((3, 2, 6, 6)))
    assert [row.name for row in report.failed_rows] == ["1.scale"]
    ok = cnn.Sequential([layers.Conv2D(4, 3, activation="tanh"), ChannelScale(), layers.Flatten(),
                         layers.Dense(3, activation="softmax")], input_shape=(2, 6, 6), seed=0)
    assert cnn.gradcheck(ok, rng.standard_normal((3, 2, 6, 6))).passed


# ----------------------------------------------------------------------------- models


def residual_model(seed=0, dtype="float32", softmax=True):
    inputs = cnn.Input((3, 6, 6))
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(4, 3, padding="same")(layers.Conv2D(4, 3, padding="same", activation="tanh")(h))
    h = layers.Activation("relu")(layers.Add()([h, y]))
    out = layers.Dense(5, activation="softmax" if softmax else None)(layers.Flatten()(h))
    return cnn.Model(inputs, out, seed=seed, dtype=dtype, name="resnet")


def test_a_residual_graph_model_passes_and_is_not_modified(rng):
    model = residual_model()
    weights = model.get_weights()
    grads = [g.copy() for g in model.grads]
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    report = cnn.gradcheck(model, x, np.array([0, 4, 2]))
    assert report.passed, report.table()
    assert [row.name for row in report.rows] == ["input"] + model.param_names
    assert "cross_entropy" in report.loss
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.grads, grads, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.dtype == np.float32 and model.loss is None


def test_model_losses_compiled_and_uncompiled(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    plain = cnn.gradcheck(residual_model(softmax=False), x)
    assert plain.passed and plain.loss.startswith("sum(output * r)")
    mse = residual_model().compile(loss="mse", optimizer="sgd")
    report = cnn.gradcheck(mse, x, rng.random((2, 5)))
    assert report.passed and "mse" in report.loss
    assert report["input"].size == x.size


def test_the_input_gradient_of_a_model_is_the_engine_s(rng):
    # a model whose first layer has no parameters: dC/dx still comes from the backward pass
    model = cnn.Sequential([layers.MaxPool2D(2), layers.Flatten(), layers.Dense(3, activation="softmax")],
                           input_shape=(1, 4, 4), seed=0, dtype="float64")
    report = cnn.gradcheck(model, distinct_values(rng, (2, 1, 4, 4)))
    assert report.passed and report["input"].checked == 32


def test_a_model_with_dropout_passes(rng, one_thread):
    model = cnn.models.build("cnn", input_shape=(1, 8, 8), classes=3, seed=0, dropout=0.5)
    report = cnn.gradcheck(model, rng.random((2, 1, 8, 8)), max_entries=10)
    assert report.passed, report.table()


def test_cli_checks_a_zoo_model():
    proc = subprocess.run([sys.executable, "-m", "cnn.gradcheck", "--model", "lenet5",
                           "--max-entries", "3", "--input-shape", "1", "16", "16"],
                          capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"),
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gradcheck of Sequential 'lenet5'" in proc.stdout
    assert proc.stdout.rstrip().endswith("passed")
    assert proc.stderr == ""


def test_cli_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--model", "nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["--model", "lenet5", "--max-entries", "0"])
    assert exc.value.code == 2
    assert "max_entries must be an int >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs, error, match", [
    ({"eps": 0.0}, ValueError, r"eps must be a finite number in \(0.0, inf\)"),
    ({"atol": -1.0}, ValueError, "atol must be"),
    ({"rtol": "1e-3"}, TypeError, "rtol must be a real number"),
    ({"max_entries": 0}, ValueError, "max_entries must be an int >= 1, got 0"),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"raise_exception": 1}, TypeError, "raise_exception must be a bool"),
])
def test_bad_options_are_refused(kwargs, error, match, rng):
    with pytest.raises(error, match=match):
        cnn.gradcheck(layers.Dense(2), rng.standard_normal((2, 3)), **kwargs)


def test_bad_inputs_are_refused(rng):
    with pytest.raises(TypeError, match="layer_or_model must be a cnn.layers.Layer.*got str"):
        cnn.gradcheck("Dense", np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x must be a real numeric array, got dtype <U1"):
        cnn.gradcheck(layers.Dense(2), np.array([["a"]]))
    with pytest.raises(ValueError, match=r"x must be a batch of shape \(N, ...\) with N >= 1, got shape"):
        cnn.gradcheck(layers.Dense(2), np.zeros(3))
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN/inf"):
        cnn.gradcheck(layers.Dense(2), np.array([[0.0, np.nan]]))
    built = layers.Dense(2)
    built.build((3,))
    with pytest.raises(ValueError, match=r"x must have items of shape \(3,\).*got \(4,\)"):
        cnn.gradcheck(built, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x does not fit Dense.*flat items"):
        cnn.gradcheck(layers.Dense(2), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="y must be None for a layer"):
        cnn.gradcheck(layers.Dense(2), np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(TypeError, match="x must be a list of at least 2 arrays for Add"):
        cnn.gradcheck(layers.Add(), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x must be an array"):
        cnn.gradcheck(layers.Dense(2), [np.zeros((2, 3))])
    model = residual_model(softmax=False)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 6, 6\) for this model, got \(2, 3, 5"):
        cnn.gradcheck(model, np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match="y must be None for an uncompiled model without a softmax"):
        cnn.gradcheck(model, np.zeros((2, 3, 6, 6)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"y must hold class ids in \[0, 5\)"):
        cnn.gradcheck(residual_model(), rng.standard_normal((2, 3, 6, 6)), np.array([0, 7]))


def test_the_report_api(rng):
    report = cnn.gradcheck(layers.Dense(3), rng.standard_normal((2, 4)), atol=1e-7, rtol=1e-5)
    assert isinstance(report, GradcheckReport)
    assert str(report) == report.table()
    assert "atol 1e-07, rtol 1e-05" in report.table()
    assert bool(report) is report.passed is True
    assert (report.eps, report.max_entries, report.seed) == (1e-6, 200, 0)
    with pytest.raises(KeyError, match=r"no row 'nope'; the rows are \['input', 'weight', 'bias'\]"):
        report["nope"]
