"""Tutorial 3: a residual graph model with the functional API (cnn.Input, layers.Add), trained
briefly, summarised, checked, saved and loaded.

Run: ``python docs/tutorials/03_residual_graph.py`` (about 5 s on 2 cores). It writes
``tutorial-resnet.npz`` in the current folder.
"""

import numpy as np

import cnn
from cnn import layers, optimizers


def residual_block(h, filters):
    """``relu(h + conv(relu(conv(h))))``: the identity shortcut of He et al. (2016)."""
    r = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
    r = layers.Conv2D(filters, 3, padding="same")(r)
    return layers.Activation("relu")(layers.Add()([h, r]))


# -- 1. the graph: each layer is called on symbolic tensors; cnn.Model(inputs, outputs) plans it
inputs = cnn.Input((1, 28, 28))                                     # one image, no batch axis
h = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)  # (8, 28, 28)
h = layers.MaxPool2D(2)(h)                                          # (8, 14, 14)
h = residual_block(h, 8)                                            # (8, 14, 14)
# a projection shortcut: a 1x1 conv gives the shortcut the branch's 16 channels for the Add
branch = layers.Conv2D(16, 3, padding="same", activation="relu")(h)
branch = layers.Conv2D(16, 3, padding="same")(branch)
shortcut = layers.Conv2D(16, 1)(h)
h = layers.Activation("relu")(layers.Add()([shortcut, branch]))    # (16, 14, 14)
h = layers.Flatten()(layers.MaxPool2D(2)(h))                        # (784,)
outputs = layers.Dense(10, activation="softmax")(h)
model = cnn.Model(inputs, outputs, seed=0, name="tiny_resnet")
model.compile(loss="cross_entropy", optimizer=optimizers.Adam(lr=5e-3))
model.summary()

# -- 2. before training: the audit checks every parameter of the graph in float64. Random
# normal inputs avoid ReLU zeros and max-pool ties, where central differences mean nothing.
cnn.set_num_threads(1)  # hundreds of tiny passes: one thread is faster
report = cnn.gradcheck(model, np.random.default_rng(0).standard_normal((2, 1, 28, 28)),
                       max_entries=40)
print(report.table())
assert report.passed
cnn.set_num_threads(None)

# -- 3. brief training on the bundled subset
(x, y), (xt, yt) = cnn.datasets.load_mnist()
history = model.fit(x, y, epochs=2, batch_size=64, validation_data=(xt[:1000], yt[:1000]),
                    verbose=2)
result = model.evaluate(xt[1000:3000], yt[1000:3000])
print(f"test loss {result['loss']:.4f}, test accuracy {result['accuracy']:.4f}")
assert result["accuracy"] > 0.85, result  # reaches ~0.93 after two epochs

# -- 4. the open step: forward + backward, the gradients in model.grads, then the update
loss = model.forward_backward(x[:64], y[:64])
print(f"one more step at loss {loss:.4f}; gradient norm per weight tensor:")
for name, g in zip(model.param_names, model.grads):
    if name.endswith("weight"):   # keys are "<layer index in model.layers>.<parameter>"
        print(f"  {name:>9}  {type(model.layers[int(name.split('.')[0])]).__name__:<6} "
              f"{float(np.linalg.norm(g)):.4f}")
assert all(np.isfinite(g).all() and np.any(g) for g in model.grads)
model.apply_gradients()

# -- 5. save and load: the file stores the graph (which call reads which) and the weights
model.save("tutorial-resnet.npz")
again = cnn.load_model("tutorial-resnet.npz")
assert type(again) is cnn.Model and len(again.layers) == len(model.layers)
assert np.array_equal(again.predict(xt[:500]), model.predict(xt[:500]))
print("saved tutorial-resnet.npz; the loaded graph predicts bit-identically")
