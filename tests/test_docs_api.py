"""The API reference (docs/api/*.rst) lists every public name, so it cannot rot.

A public module is any module of the package without a ``_`` part in its dotted name (and not a
``__main__``, which runs a command when imported). Its public names are its ``__all__``. Each
needs an entry on the API pages: a line of an ``.. autosummary::`` block under
``.. currentmodule:: M`` (the stubs under docs/api/generated/ are made from these at build
time), or, for a name that is itself a module, that module's own ``.. automodule::`` page.
Plain RST parsing: no Sphinx build is needed, so the check costs milliseconds.
"""

import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

import cnn

API = Path(__file__).resolve().parent.parent / "docs" / "api"

# Modules with no code to document (cnn.data holds the bundled MNIST files).
NOT_DOCUMENTED = {"cnn.data"}


def public_modules():
    names = ["cnn"]
    for info in pkgutil.walk_packages(cnn.__path__, "cnn."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            continue
        names.append(info.name)
    return sorted(names)


def documented(api_dir=API):
    """``(entries, modules)``: the qualified names in autosummary blocks, the automodule targets."""
    entries, modules = set(), set()
    for page in sorted(api_dir.rglob("*.rst")):
        if "generated" in page.parts:
            continue
        current, in_summary = None, False
        for line in page.read_text(encoding="utf-8").splitlines():
            directive = re.match(r"\.\. (\w+(?:\w|:)*)::\s*(\S*)", line)
            if directive:
                kind, arg = directive.groups()
                in_summary = kind == "autosummary"
                if kind in ("currentmodule", "module"):
                    current = arg
                elif kind == "automodule":
                    current = arg
                    modules.add(arg)
                continue
            if in_summary:
                if line.strip().startswith(":") or not line.strip():
                    continue              # an option of the directive, or a blank line
                if not line.startswith(" "):
                    in_summary = False    # the block ended
                    continue
                name = line.strip().lstrip("~")
                entries.add(name if current is None or name.startswith("cnn.") else f"{current}.{name}")
    return entries, modules


def missing_names(api_dir=API):
    entries, modules = documented(api_dir)
    missing = []
    for name in public_modules():
        if name in NOT_DOCUMENTED:
            continue
        if name not in modules:
            missing.append(f"{name} (no page with '.. automodule:: {name}')")
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", ()):
            value = getattr(mod, attr)
            if isinstance(value, types.ModuleType):
                if value.__name__ not in modules:
                    missing.append(f"{name}.{attr} (module {value.__name__} has no page)")
            elif f"{name}.{attr}" not in entries:
                missing.append(f"{name}.{attr}")
    return missing


def test_public_modules_found():
    mods = public_modules()
    for expected in ("cnn.layers", "cnn.functional", "cnn.gradcheck", "cnn.onnx", "cnn.bench.cli"):
        assert expected in mods
    assert not any(m.endswith("__main__") or "._" in m for m in mods)


def test_every_public_name_is_on_the_api_pages():
    missing = missing_names()
    assert not missing, ("public names missing from docs/api/*.rst (add them to the module's "
                         "autosummary block):\n  " + "\n  ".join(missing))


def test_every_listed_name_exists():
    """The reverse: a page must not list a name that was renamed or removed."""
    entries, modules = documented()
    for mod in modules:
        importlib.import_module(mod)
    stale = []
    for entry in sorted(entries):
        module, _, attr = entry.rpartition(".")
        try:
            if not hasattr(importlib.import_module(module), attr):
                stale.append(entry)
        except ImportError:
            stale.append(entry)
    assert not stale, f"docs/api lists names that do not exist: {stale}"


def test_check_catches_a_missing_name(tmp_path, monkeypatch):
    """Drop one entry from a copy of the pages: the check must name it."""
    for page in API.rglob("*.rst"):
        if "generated" in page.parts:
            continue
        target = tmp_path / page.relative_to(API)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = page.read_text(encoding="utf-8")
        if page.name == "cnn.layers.rst":
            assert "   Conv2D\n" in text
            text = text.replace("   Conv2D\n", "")
        target.write_text(text, encoding="utf-8")
    assert missing_names(tmp_path) == ["cnn.layers.Conv2D"]
    monkeypatch.setattr(cnn.layers, "__all__", [*cnn.layers.__all__, "Conv2D_new_name"], raising=True)
    monkeypatch.setattr(cnn.layers, "Conv2D_new_name", cnn.layers.Conv2D, raising=False)
    assert "cnn.layers.Conv2D_new_name" in missing_names()


@pytest.mark.parametrize("name", ["cnn.Sequential", "cnn.functional.conv2d", "cnn.gradcheck.gradcheck"])
def test_known_names_are_listed(name):
    assert name in documented()[0]
