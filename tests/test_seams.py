"""The engine's seams (issue 9): the open step and its hooks, the strategy, buffers, the
registry with user-defined layers, and the acyclic import graph."""

import ast
import pathlib

import numpy as np
import pytest

import cnn
from cnn import layers, optimizers
from cnn.strategy import Strategy

PACKAGE = pathlib.Path(cnn.__file__).parent


# ----------------------------------------------------------------------------- a custom layer


@cnn.register(package="tests")
class RunningCenter(layers.Layer):
    """Subtracts the batch mean in training and the running mean (a buffer) in evaluation;
    counts its training batches in a second buffer."""

    buffer_names = ("running_mean", "batches")

    def __init__(self, momentum=0.5):
        super().__init__()
        self.momentum = float(momentum)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def buffer_shapes(self, input_shape):
        return [("running_mean", tuple(input_shape)), ("batches", ())]

    def _create_params(self, rng):
        self.add_buffer("running_mean", np.zeros(self.input_shape))
        self.add_buffer("batches", 0.0)

    def forward(self, x, training=False):
        self._check_input(x)
        if not training:
            return x - self.buffers[0]
        mean = x.mean(axis=0)
        self.buffers[0] *= 1.0 - self.momentum
        self.buffers[0] += self.momentum * mean
        self.buffers[1] += 1.0
        self._cache = x.shape[0]
        return x - mean

    def backward(self, grad):
        self._cached()
        if not self.need_input_grad:
            return None
        return grad - grad.mean(axis=0, keepdims=True)

    def get_config(self):
        return {"momentum": self.momentum}


class Unregistered(RunningCenter):
    pass


def centred_model(layer_cls=RunningCenter, seed=0, dtype="float32"):
    model = cnn.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2),
                            layer_cls(), layers.Flatten(), layers.Dropout(0.2),
                            layers.Dense(10, activation="softmax")],
                           input_shape=(1, 12, 12), seed=seed, dtype=dtype)
    model.compile(loss="cross_entropy", optimizer=optimizers.Adam(lr=0.01))
    return model


@pytest.fixture(scope="module")
def small_data():
    (x, y), _ = cnn.datasets.load_mnist()
    return np.ascontiguousarray(x[:96, :, 8:20, 8:20]), y[:96]


def test_custom_registered_layer_trains_saves_loads_and_predicts_identically(tmp_path, small_data):
    x, y = small_data
    model = centred_model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=1)
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"2.running_mean", "2.batches"}
    assert buffers["2.batches"] == 2 * (96 // 16)
    assert np.abs(buffers["2.running_mean"]).max() > 0
    path = tmp_path / "custom.npz"
    model.save(path)
    loaded = cnn.load_model(path)
    assert isinstance(loaded.layers[2], RunningCenter)
    assert loaded.layers[2].momentum == 0.5
    for (k1, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    # the running mean is what evaluation uses: another buffer value changes the prediction
    loaded.layers[2].buffers[0] += 1.0
    assert not np.array_equal(model.predict(x), loaded.predict(x))


def test_buffers_in_state_dict_and_weights(small_data):
    model = centred_model()
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.running_mean", "2.batches",
                           "5.weight", "5.bias"]
    weights = model.get_weights()
    assert [w.shape for w in weights] == [v.shape for v in state.values()]
    weights[2] = np.full(weights[2].shape, 3.0)
    model.set_weights(weights)
    np.testing.assert_array_equal(model.layers[2].buffers[0], 3.0)
    state["2.batches"] = np.array(7.0)
    model.load_state_dict(state)
    assert model.layers[2].buffers[1] == 7.0
    # buffers are not trained: they are not among the parameters the optimizer sees
    assert model.param_names == ["0.weight", "0.bias", "5.weight", "5.bias"]


def test_buffers_through_checkpoint_resume_bit_for_bit(tmp_path, small_data):
    x, y = small_data
    straight = centred_model()
    straight.fit(x, y, epochs=3, batch_size=16, verbose=0)
    first = centred_model()
    ckpt = tmp_path / "ckpt-{epoch}.npz"
    first.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[cnn.ModelCheckpoint(str(ckpt), save_best_only=False)])
    resumed = cnn.load_model(tmp_path / "ckpt-2.npz")
    resumed.fit(x, y, epochs=3, batch_size=16, verbose=0, initial_epoch=2)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)


def test_a_file_naming_an_unregistered_class_is_refused(tmp_path, small_data):
    model = centred_model()
    path = tmp_path / "m.npz"
    model.save(path)
    import zipfile
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    arch = "architecture.npy"
    entries[arch] = entries[arch].replace(b"tests>RunningCenter", b"tests>RunningCentre")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=r"tests>RunningCentre.*@cnn.register"):
        cnn.load_model(path)


def test_an_unregistered_layer_trains_but_cannot_be_saved(tmp_path, small_data):
    x, y = small_data
    model = centred_model(Unregistered)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"Unregistered is not registered.*@cnn.register"):
        model.save(tmp_path / "u.npz")
    assert not (tmp_path / "u.npz").exists()


def test_register_refuses_taken_names_and_non_classes():
    with pytest.raises(ValueError, match="already registered"):
        @cnn.register(package="tests", name="RunningCenter")
        class Other(layers.Layer):
            pass
    with pytest.raises(TypeError, match="cnn.register takes"):
        cnn.register(3)
    with pytest.raises(ValueError, match="package must be"):
        cnn.register(RunningCenter, package="a>b")


def test_registered_activation_and_initializer_by_name():
    @cnn.register(package="tests")
    class Cube(cnn.activations.Activation):
        name = "cube"

        def forward(self, z):
            return z ** 3

        def backward(self, z, a, grad_a):
            return 3 * z * z * grad_a

    @cnn.register(package="tests")
    def halves(shape, fan_in, fan_out, rng, dtype=np.float32):
        return np.full(shape, 0.5, dtype=dtype)

    assert Cube.name == "tests>cube"
    layer = layers.Dense(3, activation="tests>cube", kernel_initializer="tests>halves")
    model = cnn.Sequential([layer], input_shape=(2,), seed=0)
    np.testing.assert_array_equal(model.layers[0].params[0], 0.5)
    config = model.get_config()
    rebuilt = cnn.Sequential.from_config(config)
    np.testing.assert_array_equal(rebuilt.predict(np.ones((1, 2))), np.full((1, 3), 1.0))


# ----------------------------------------------------------------------------- the open step


class ScaleGradients(Strategy):
    """A test strategy: every gradient times ``factor`` before the update."""

    def __init__(self, factor):
        self.factor = factor
        self.calls = 0

    def reduce_gradients(self, model, n_local, stats):
        self.calls += 1
        for g in model.grads:
            g *= self.factor
        return n_local, stats


def dense_model(seed=0):
    model = cnn.Sequential([layers.Flatten(), layers.Dense(16, activation="tanh"),
                            layers.Dense(10, activation="softmax")],
                           input_shape=(1, 12, 12), seed=seed, dtype="float64")
    model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1))
    return model


def test_strategy_sees_the_gradients_before_the_update(small_data):
    x, y = small_data
    x = x.astype(np.float64)
    model = dense_model()
    before = [p.copy() for p in model.params]
    _, grads = model.compute_gradients(x, y)
    strategy = ScaleGradients(0.25)
    model.fit(x, y, epochs=1, batch_size=x.shape[0], shuffle=False, verbose=0, strategy=strategy)
    assert strategy.calls == 1
    for key, p0, p in zip(model.param_names, before, model.params):
        np.testing.assert_allclose(p, p0 - 0.1 * (0.25 * grads[key]), rtol=1e-12, atol=1e-15)
    # and without the strategy the step is the plain one
    plain = dense_model()
    plain.fit(x, y, epochs=1, batch_size=x.shape[0], shuffle=False, verbose=0)
    for key, p0, p in zip(plain.param_names, before, plain.params):
        np.testing.assert_allclose(p, p0 - 0.1 * grads[key], rtol=1e-12, atol=1e-15)


def test_train_step_is_forward_backward_hooks_then_apply(small_data):
    x, y = small_data
    x = x.astype(np.float64)[:32]
    a, b = dense_model(), dense_model()
    seen = []
    handle = b.register_gradient_hook(lambda grads: seen.append([g.copy() for g in grads]))
    loss_a = a.train_step(x, y[:32])
    loss_b = b.forward_backward(x, y[:32])
    assert loss_a == loss_b
    grads_before_update = [g.copy() for g in b.grads]
    b.apply_gradients()
    assert len(seen) == 1
    for g, h in zip(seen[0], grads_before_update):
        np.testing.assert_array_equal(g, h)
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)
    handle.remove()
    b.train_step(x, y[:32])
    assert len(seen) == 1


def test_gradient_hook_can_clip(small_data):
    x, y = small_data
    model = dense_model()
    model.register_gradient_hook(lambda grads: [np.clip(g, -1e-3, 1e-3, out=g) for g in grads])
    before = [p.copy() for p in model.params]
    model.train_step(x[:32].astype(np.float64), y[:32])
    for p, p0 in zip(model.params, before):
        assert np.abs(p - p0).max() <= 0.1 * 1e-3 * (1 + 1e-12)


def test_layer_hooks_see_every_layer_in_order(small_data):
    x, y = small_data
    model = dense_model()
    events = []
    handle = model.register_layer_hook(lambda event, i, layer: events.append((event, i)))
    model.train_step(x[:8].astype(np.float64), y[:8])
    n = len(model.layers)
    forward = [e for e in events if e[0].startswith("forward")]
    backward = [e for e in events if e[0].startswith("backward")]
    assert forward == [(f"forward_{w}", i) for i in range(n) for w in ("begin", "end")]
    # Flatten (first, before any parameter) needs no input gradient: backward stops there
    assert backward == [(f"backward_{w}", i) for i in range(n - 1, 0, -1) for w in ("begin", "end")]
    events.clear()
    model.predict(x[:4].astype(np.float64))
    assert [e for e in events if e[0] == "forward_end"] == [("forward_end", i) for i in range(n)]
    handle.remove()
    events.clear()
    model.predict(x[:4].astype(np.float64))
    assert events == []


def test_no_layer_keeps_preactivations_after_inference(small_data):
    x, _ = small_data
    model = centred_model()
    model.predict(x)
    for layer in model.layers:
        assert getattr(layer, "_cache", None) is None
        assert not hasattr(layer, "z")


def test_the_logits_path_is_chosen_at_compile():
    model = dense_model()
    assert model.fused_softmax_cross_entropy
    model.compile(loss="mse", optimizer="sgd")
    assert not model.fused_softmax_cross_entropy


# ----------------------------------------------------------------------------- import graph


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """``(module-level imports, imports inside functions)`` of cnn modules in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top, lazy = set(), set()

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        found = []
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.append(candidate if _exists(candidate) else base)
        return found

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in targets(child):
                    if t == "cnn" or t.startswith("cnn."):
                        (lazy if in_function else top).add(t)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    top.discard(name)
    lazy.discard(name)
    return top, lazy


def _exists(module):
    rel = pathlib.Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists() \
        or any((PACKAGE / rel.parent).glob(rel.name + ".*.so")) or (PACKAGE / rel).with_suffix(".pyx").exists()


def _cycle(graph):
    state = {}

    def dfs(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
            if state.get(nxt) is None:
                found = dfs(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = dfs(node, [node])
            if found:
                return found
    return None


# Lazy imports that break what would be a cycle: at most one, each with its reason.
DOCUMENTED_LAZY_EDGES = {}


def test_the_import_graph_is_acyclic():
    graph = {}
    lazy_edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if "tests" in path.parts:
            continue
        top, lazy = _imports(path)
        module = _module_name(path)
        graph.setdefault(module, set()).update(top)
        for target in lazy:
            lazy_edges.add((module, target))
    assert _cycle(graph) is None, f"import cycle at module level: {' -> '.join(_cycle(graph))}"
    full = {m: set(t) for m, t in graph.items()}
    for a, b in lazy_edges - set(DOCUMENTED_LAZY_EDGES):
        full.setdefault(a, set()).add(b)
    cycle = _cycle(full)
    assert cycle is None, f"a lazy import closes a cycle: {' -> '.join(cycle)}"
    assert len(DOCUMENTED_LAZY_EDGES) <= 1
