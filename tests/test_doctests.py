"""The examples in the docstrings and in README.md run, and print what they say they print.

(a) Docstrings: :mod:`doctest` over every module of the package (``__main__`` modules, which
    run a command when imported, excepted), one test per module, each in a fresh temporary
    folder (examples that save files write there) with ``ELLIPSIS`` and
    ``NORMALIZE_WHITESPACE``. An example that cannot run here (it needs a file or a model the
    docstring only names) carries ``# doctest: +SKIP`` on each line.

(b) README.md: every block fenced exactly ```` ```python ```` runs, top to bottom in one
    namespace (the README is read in order: a later block may use a model an earlier one
    trained), in a fresh temporary folder. A block that is not meant to run is fenced with
    another language (```` ```text ````, ```` ```bash ````, or a bare ```` ``` ````). To keep the
    test quick, :func:`cnn.datasets.load_mnist` is cut to its first 512 training and 500 test
    images while the blocks run; everything else (the model, ``fit``, save/load and the
    README's own ``assert`` s) runs as written. Blocks that use ``cnn.onnx`` are skipped,
    with a message, when ``onnx``/``onnxruntime`` are not installed.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import cnn

ROOT = Path(__file__).resolve().parent.parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules():
    names = ["cnn"]
    for info in pkgutil.walk_packages(cnn.__path__, "cnn."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


def _tests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # a module's own objects only: a re-exported function is tested where it is defined
    return [t for t in finder.find(module, name) if t.examples]


MODULES = _modules()
WITH_EXAMPLES = [name for name in MODULES if _tests(name)]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    tests = _tests(name)
    monkeypatch.chdir(tmp_path)
    old_threads = cnn.get_num_threads()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    try:
        for t in tests:
            runner.run(t, out=report.append)
    finally:
        cnn.set_num_threads(old_threads)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)


def test_examples_exist_where_they_teach():
    """The most used doors carry examples (so (a) tests something)."""
    have = {t.name for name in MODULES for t in _tests(name)}
    for wanted in ("cnn.sequential.Sequential", "cnn.model.Model", "cnn.model.Model.fit",
                   "cnn.model.Model.predict", "cnn.functional.conv2d", "cnn.functional.maxpool2d",
                   "cnn.gradcheck._audit.gradcheck", "cnn.serialization.load_model",
                   "cnn.functional.conv2d_backward", "cnn.datasets.load_mnist",
                   "cnn.metrics.confusion_matrix"):
        assert wanted in have, f"no docstring example in {wanted}"


def test_a_broken_example_fails():
    """The runner really compares outputs: a wrong expected value is a failure."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> import cnn\n>>> cnn.get_num_threads() > 0\nFalse\n", {}, "broken",
                              None, 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda s: None)
    assert runner.summarize(verbose=False).failed == 1


# ----------------------------------------------------------------------------- README.md


def readme_blocks(text):
    """The bodies of the blocks fenced exactly ```python, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)


def test_readme_blocks_are_found():
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    assert any("model.fit(" in b for b in blocks)
    sample = "text\n```python\nx = 1\n```\n```text\nnot run\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert readme_blocks(sample) == ["x = 1\n", "y = 2\n"]


def _have_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    real_load = cnn.datasets.load_mnist

    def small_mnist(*args, **kwargs):
        (x, y), (xt, yt) = real_load(*args, **kwargs)
        pick = np.random.default_rng(0).permutation(len(x))[:512]
        return (x[pick], y[pick]), (xt[:500], yt[:500])

    monkeypatch.setattr(cnn.datasets, "load_mnist", small_mnist)
    monkeypatch.chdir(tmp_path)
    skipped = run_blocks(blocks, skip_onnx=not _have_onnx())
    if skipped:
        pytest.skip(f"README blocks {[i + 1 for i in skipped]} need onnx and onnxruntime")


def run_blocks(blocks, skip_onnx=False):
    """Run the blocks in order in one namespace; AssertionError naming the first that fails.
    Returns the indices of the blocks skipped (those using cnn.onnx, with ``skip_onnx``)."""
    namespace = {"__name__": "__readme__"}
    skipped = []
    for i, block in enumerate(blocks):
        if skip_onnx and "cnn.onnx" in block:
            skipped.append(i)
            continue
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README.md python block {i + 1} failed: {exc!r}\n{block}") from exc
    return skipped


def test_a_broken_readme_block_fails():
    """A later block sees an earlier block's names; a failing block is reported by number."""
    assert run_blocks(["a = 2\n", "assert a == 2\n"]) == []
    with pytest.raises(AssertionError, match="python block 2 failed"):
        run_blocks(["a = 2\n", "assert a == 3\n"])
    with pytest.raises(AssertionError, match="python block 1 failed: NameError"):
        run_blocks(["np.zeros(3)\n"])
