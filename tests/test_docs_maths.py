"""The maths pages (docs/maths) cannot rot silently, even without a docs build.

Every section of the seed has its page, with the seed's equation numbers; every source excerpt
a page includes (``:pyobject:``, ``:start-at:``/``:end-before:`` markers) and every test it
names (``tests/test_x.py::name``) still exists; every figure script exists and runs, and the
checks inside the figure scripts (their drawings against ``cnn.reference``) hold.
"""

import ast
import pathlib
import re
import runpy
import sys

import pytest

from cnn import reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
MATHS = ROOT / "docs" / "maths"
FIGURES = ROOT / "docs" / "figures"

# page -> (seed sections it covers, seed equation numbers it must show, has a compiled kernel)
SECTIONS = {
    "softmax": (("I.1 Softmax derivative", "I.2 Definitions and standard functions derivatives"),
                (1, 2, 3, 4), False),
    "output-layer": (("II.1 Output layer L",), (), True),
    "hidden-layers": (("II.2 Layer L-1", "II.3 Layer l < L", "II.4 Algorithm"), (), True),
    "mini-batch": (("II.5 Improvement: mini-batch",), (), True),
    "conv2d": (("III.1 Conv2D Layer",), (7, 8, 10, 11, 12, 13, 14), True),
    "maxpool": (("III.2 Max-pooling Layer",), (15, 16, 17), True),
    "flatten": (("III.3 Flatten Layer",), (18, 19), False),
}
# the parts every page has (the brief of the maths pages)
HEADINGS = ("The equations|The forward pass", "Where the seed slips", "The tests")

DIRECTIVE = re.compile(r"^\.\. (literalinclude|plot):: (\S+)\n((?:   :[\w-]+:.*\n)*)", re.M)
OPTION = re.compile(r"^   :([\w-]+):(.*)$", re.M)
TEST_REF = re.compile(r"tests/(test_\w+\.py)::(\w+)")
CODE_REF = re.compile(r"(cnn/[\w/]+\.(?:py|pyx|h))::(\w+)")
EQ_NUMBER = re.compile(r"\\text\{\((\d+)\)\}")


def _pages():
    return sorted(MATHS.glob("*.rst"))


def _includes():
    """``(page, kind, target path, options)`` for every literalinclude/plot in docs/maths."""
    found = []
    for page in _pages():
        for kind, target, opts in DIRECTIVE.findall(page.read_text()):
            options = {k: v.strip() for k, v in OPTION.findall(opts)}
            path = (page.parent / target) if kind == "literalinclude" else (ROOT / "docs" / target)
            found.append((page.name, kind, path.resolve(), options))
    return found


def _find_object(tree, dotted):
    """The ast node of ``dotted`` (``name`` or ``Class.method``) in a module, or None."""
    body = tree.body
    node = None
    for part in dotted.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.ClassDef)) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def test_every_seed_section_has_its_page_in_the_toctree():
    index = (MATHS / "index.rst").read_text()
    toctree = index[index.index(".. toctree::"):]
    for page, (sections, _, _) in SECTIONS.items():
        path = MATHS / f"{page}.rst"
        assert path.is_file(), f"no page for seed section(s) {sections}: {path} is missing"
        assert re.search(rf"^   {re.escape(page)}$", toctree, re.M), f"{page} not in the toctree"
        text = path.read_text()
        title = text.splitlines()[0]
        assert "(seed " in title, f"{page}: the title does not name its seed section: {title!r}"
        intro = " ".join(text.split("\n\n")[1].split())  # the first paragraph, one line
        for section in sections:
            number, name = section.split(" ", 1)
            # "Seed section III.1, *Conv2D Layer*: ..."
            assert f"{number}, *{name}*" in intro, f"{page} does not name {section!r}: {intro!r}"
    extra = {p.stem for p in _pages()} - set(SECTIONS) - {"index"}
    assert not extra, f"pages not tied to a seed section: {sorted(extra)}"


@pytest.mark.parametrize("page", sorted(SECTIONS))
def test_each_page_has_the_equations_slips_code_and_tests(page):
    text = (MATHS / f"{page}.rst").read_text()
    for heading in HEADINGS:
        assert re.search(rf"^({heading})( \(.*\))?\n[-~]+$", text, re.M), (page, heading)
    numbers = {int(n) for n in EQ_NUMBER.findall(text)}
    missing = set(SECTIONS[page][1]) - numbers
    assert not missing, f"{page} lacks the seed's equations {sorted(missing)}"
    assert ".. math::" in text
    includes = [(kind, path) for name, kind, path, _ in _includes() if name == f"{page}.rst"]
    tests = [p for k, p in includes if k == "literalinclude" and p.parent == ROOT / "tests"]
    code = [p for k, p in includes if k == "literalinclude" and ROOT / "cnn" in p.parents]
    assert tests, f"{page} shows no test"
    assert code, f"{page} shows no library code"
    if SECTIONS[page][2]:
        assert any(p.parent == ROOT / "cnn" / "_ext" for p in code), f"{page} shows no kernel"


def test_every_directive_is_seen_by_these_checks():
    # an indented or oddly written directive would escape the checks below
    for page in _pages():
        text = page.read_text()
        written = len(re.findall(r"\.\. (?:literalinclude|plot)::", text))
        parsed = len(DIRECTIVE.findall(text))
        assert written == parsed, f"{page.name}: {written} includes written, {parsed} parsed"


def test_every_reference_function_is_shown():
    shown = {opts.get("pyobject") for _, _, path, opts in _includes()
             if path == ROOT / "cnn" / "reference.py"}
    assert set(reference.__all__) <= shown, set(reference.__all__) - shown


@pytest.mark.parametrize("page, kind, path, options",
                         [pytest.param(*inc, id=f"{inc[0]}:{inc[2].name}:{i}")
                          for i, inc in enumerate(_includes())])
def test_included_sources_and_markers_resolve(page, kind, path, options):
    assert path.is_file(), f"{page}: {kind} of a missing file {path}"
    assert ROOT in path.parents, f"{page}: {path} is outside the repository"
    text = path.read_text()
    if "pyobject" in options:
        assert path.suffix == ".py", f"{page}: :pyobject: needs a Python file, not {path.name}"
        assert _find_object(ast.parse(text), options["pyobject"]) is not None, (
            f"{page}: {options['pyobject']} is not defined in {path.relative_to(ROOT)}")
    start = 0
    for key in ("start-at", "start-after"):
        if key in options:
            start = text.find(options[key])
            assert start >= 0, f"{page}: marker {options[key]!r} not in {path.relative_to(ROOT)}"
            assert text.count(options[key]) == 1 or key == "start-after", (
                f"{page}: marker {options[key]!r} is ambiguous in {path.relative_to(ROOT)}")
    for key in ("end-before", "end-at"):
        if key in options:
            assert text.find(options[key], start) >= 0, (
                f"{page}: end marker {options[key]!r} not after the start in "
                f"{path.relative_to(ROOT)}")


def test_named_tests_exist():
    refs = set()
    for page in _pages():
        refs |= {(page.name,) + m for m in TEST_REF.findall(page.read_text())}
    assert len(refs) >= 20  # the pages do name their tests
    for page, filename, name in sorted(refs):
        path = ROOT / "tests" / filename
        assert path.is_file(), f"{page}: tests/{filename} does not exist"
        assert _find_object(ast.parse(path.read_text()), name) is not None, (
            f"{page}: tests/{filename}::{name} does not exist")


def test_named_library_objects_exist():
    refs = set()
    for page in _pages():
        refs |= {(page.name,) + m for m in CODE_REF.findall(page.read_text())}
    assert len(refs) >= 10
    for page, filename, name in sorted(refs):
        path = ROOT / filename
        assert path.is_file(), f"{page}: {filename} does not exist"
        text = path.read_text()
        if path.suffix == ".py":
            found = _find_object(ast.parse(text), name) is not None
        else:  # Cython or C: a definition of that name
            found = re.search(rf"^(?:def|cpdef|cdef[\w *]*|static[\w *]*)\s\**{name}\(", text, re.M)
        assert found, f"{page}: {filename}::{name} is not defined"


def test_every_figure_script_is_used():
    # any page of the site may draw a figure from docs/figures, not only the maths pages
    used = {(ROOT / "docs" / target).resolve()
            for page in (ROOT / "docs").rglob("*.rst")
            for kind, target, _ in DIRECTIVE.findall(page.read_text()) if kind == "plot"}
    scripts = {p.resolve() for p in FIGURES.glob("*.py") if not p.name.startswith("_")}
    assert used == scripts, (sorted(p.name for p in used ^ scripts))


@pytest.mark.parametrize("script", sorted(p.name for p in FIGURES.glob("[!_]*.py")))
def test_figure_scripts_run_and_their_checks_hold(script, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.syspath_prepend(str(FIGURES))
    monkeypatch.delitem(sys.modules, "_draw", raising=False)
    try:
        runpy.run_path(str(FIGURES / script), run_name="__main__")
        assert plt.get_fignums(), f"{script} drew nothing"
    finally:
        plt.close("all")
