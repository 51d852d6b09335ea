"""Tutorial 5: export a trained model to ONNX, serve it with ONNX Runtime, compare with cnn.

Run: ``python docs/tutorials/05_onnx.py`` (about 10 s on 2 cores; needs ``pip install
'.[onnx]'``: onnx and onnxruntime). It writes ``tutorial-cnn.onnx`` in the current folder.
"""

import numpy as np
import onnx
import onnxruntime as ort

import cnn
import cnn.onnx
from cnn import layers, optimizers

# -- 1. a model to ship: a small CNN trained for two epochs on the bundled subset
(x, y), (xt, yt) = cnn.datasets.load_mnist()
model = cnn.Sequential([
    layers.Conv2D(8, 3, padding="same", activation="relu"),
    layers.MaxPool2D(2),
    layers.Conv2D(16, 3, padding="same", activation="relu"),
    layers.MaxPool2D(2),
    layers.Flatten(),
    layers.Dropout(0.2),
    layers.Dense(10, activation="softmax"),
], input_shape=(1, 28, 28), seed=0)
model.compile(loss="cross_entropy", optimizer=optimizers.Adam(lr=3e-3))
model.fit(x, y, epochs=2, batch_size=64, verbose=2)

# -- 2. export: opset 17, float32, a dynamic batch axis, checked by onnx.checker before the write
cnn.onnx.export(model, "tutorial-cnn.onnx")
proto = onnx.load("tutorial-cnn.onnx")
graph = proto.graph
print(f"opset {proto.opset_import[0].version}; input {graph.input[0].name} "
      f"{[d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]}, "
      f"output {graph.output[0].name}")
print("nodes:", ", ".join(f"{n.name}" for n in graph.node))
print("initializers:", ", ".join(f"{t.name} {tuple(t.dims)}" for t in graph.initializer))
assert "Dropout" not in [n.op_type for n in graph.node]  # the identity at inference: left out

# -- 3. serve with a plain ONNX Runtime session (cnn.onnx.inference_session makes the same
# session with the thread count set and idle spinning off)
session = ort.InferenceSession("tutorial-cnn.onnx", providers=["CPUExecutionProvider"])
batch = xt[:1000]
ort_probs = session.run(None, {"input": batch})[0]
cnn_probs = model.predict(batch)
diff = float(np.max(np.abs(ort_probs - cnn_probs)))
agree = float(np.mean(ort_probs.argmax(1) == cnn_probs.argmax(1)))
print(f"ONNX Runtime vs model.predict on {len(batch)} images: max |difference| {diff:.1e}, "
      f"same class for {agree:.1%}")
# both compute in float32 but sum in other orders: probabilities agree to float32 rounding
assert ort_probs.shape == cnn_probs.shape == (1000, 10) and ort_probs.dtype == np.float32
assert diff < 1e-5, diff
one = session.run(None, {"input": xt[:1]})[0]              # the batch axis is dynamic
assert one.shape == (1, 10) and np.allclose(one, cnn_probs[:1], atol=1e-5)
accuracy = float(np.mean(ort_probs.argmax(1) == yt[:1000]))
print(f"accuracy of the served model on those images: {accuracy:.4f}")
assert accuracy > 0.85, accuracy  # reaches ~0.94

# -- 4. and back: cnn.onnx.load reads the file into a cnn model (here a Sequential again)
back = cnn.onnx.load("tutorial-cnn.onnx")
back_diff = float(np.max(np.abs(back.predict(batch) - cnn_probs)))
print(f"cnn.onnx.load -> {type(back).__name__} of {len(back.layers)} layers; max |difference| "
      f"from the original {back_diff:.1e}")
assert back_diff < 1e-6, back_diff
