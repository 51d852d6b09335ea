"""Tutorial 2: write a custom layer, register it, check its backward pass with cnn.gradcheck,
and save and load a model that uses it; then watch the audit catch a deliberately wrong backward.

Run: ``python docs/tutorials/02_custom_layer.py`` (about 10 s on 2 cores). It writes
``tutorial-prelu.npz`` in the current folder.
"""

import numpy as np

import cnn
from cnn import layers, optimizers


@cnn.register(package="tutorial")
class PReLU(layers.Layer):
    """Parametric ReLU with one learned slope per channel (He et al., 2015).

    ``y[n, c, ...] = x`` where ``x > 0``, else ``alpha[c] * x``. Input ``(N, C, ...)`` of the
    layer's dtype; output the same shape; parameter ``alpha`` of shape ``(C,)``.
    """

    param_names = ("alpha",)

    def __init__(self, alpha_init=0.25):
        super().__init__()
        self.alpha_init = float(alpha_init)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        # what load_model checks a file's arrays against, before reading them
        return [("alpha", (input_shape[0],))]

    def _create_params(self, rng):
        c = self.input_shape[0]
        self.params = [np.full(c, self.alpha_init, dtype=self.dtype)]
        self.grads = [np.zeros(c, dtype=self.dtype)]

    def _alpha(self):
        """alpha reshaped to broadcast over (N, C, ...)."""
        return self.params[0].reshape((1, -1) + (1,) * (len(self.input_shape) - 1))

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x if training else None
        return np.where(x > 0, x, self._alpha() * x)

    def _alpha_grad(self, grad, x):
        # dC/dalpha[c] = sum over n and positions of dC/dy * x, where x <= 0
        axes = (0,) + tuple(range(2, x.ndim))
        return (grad * np.minimum(x, 0)).sum(axis=axes)

    def backward(self, grad):
        x = self._cached()
        self._check_grad(grad, x.shape[0])
        np.copyto(self.grads[0], self._alpha_grad(grad, x))
        if not self.need_input_grad:
            return None
        return np.where(x > 0, grad, self._alpha() * grad)

    def get_config(self):
        return {"alpha_init": self.alpha_init}


class BrokenPReLU(PReLU):
    """The classic slip: the alpha gradient sums over *every* x, not only the negative ones."""

    def _alpha_grad(self, grad, x):
        axes = (0,) + tuple(range(2, x.ndim))
        return (grad * x).sum(axis=axes)


cnn.set_num_threads(1)  # the audit makes hundreds of tiny forward passes: one thread is faster
rng = np.random.default_rng(0)
# Random normal inputs: no value sits at PReLU's kink (x = 0) or ties in a max-pool window,
# so central differences are meaningful everywhere (raw MNIST is mostly exact zeros).
x = rng.standard_normal((4, 3, 8, 8))

# -- 1. the audit of the right layer: every row passes
report = cnn.gradcheck(PReLU(), x)
print(report.table())
assert report.passed

# -- 2. the audit of the wrong layer: the input row passes, the alpha row fails
broken = cnn.gradcheck(BrokenPReLU(), x)
print(broken.table())
assert not broken.passed
assert broken["input"].passed and not broken["alpha"].passed
print(f"the wrong alpha gradient is off by up to {broken['alpha'].max_rel_error:.0%} "
      f"(worst at channel {broken['alpha'].worst_index[0]})")

# -- 3. the layer in a model: train briefly, audit the model, save and load
(xm, ym), (xt, yt) = cnn.datasets.load_mnist()
cnn.set_num_threads(None)  # back to the default (OMP_NUM_THREADS, else the cores)
model = cnn.Sequential([
    layers.Conv2D(8, 3, padding="same"), PReLU(),
    layers.MaxPool2D(2),
    layers.Flatten(),
    layers.Dense(10, activation="softmax"),
], input_shape=(1, 28, 28), seed=0)
model.compile(loss="cross_entropy", optimizer=optimizers.Adam(lr=3e-3))
model.summary()
model.fit(xm, ym, epochs=2, batch_size=64, verbose=2)
accuracy = model.evaluate(xt[:2000], yt[:2000])["accuracy"]
print(f"test accuracy {accuracy:.4f}; learned slopes alpha = {np.round(model.layers[1].params[0], 3)}")
assert accuracy > 0.80, accuracy  # reaches ~0.87 after two epochs

# the whole model's audit, in float64 on a float64 copy, 100 sampled entries per tensor
cnn.set_num_threads(1)
model_report = cnn.gradcheck(model, rng.standard_normal((2, 1, 28, 28)), max_entries=100)
print(model_report.table())
assert model_report.passed
cnn.set_num_threads(None)

model.save("tutorial-prelu.npz")  # the file names the layer "tutorial>PReLU"
again = cnn.load_model("tutorial-prelu.npz")
assert type(again.layers[1]) is PReLU
assert np.array_equal(again.predict(xt[:500]), model.predict(xt[:500]))
print("saved tutorial-prelu.npz; the loaded model predicts bit-identically")
