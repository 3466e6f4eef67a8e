"""Arrows point one way: the library (src/digits/*.py) never imports the components, the
pipeline or the command line (src/digits/app/); components import only the library."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "src" / "digits").glob("*.py"))
COMPONENTS = sorted((ROOT / "components").glob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda path: path.name)
def test_the_library_imports_nothing_above_it(path):
    above = ("digits.app", "digits.components", "digits.pipelines")
    assert not {name for name in _imports(path) if name.startswith(above)}


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda path: path.name)
def test_a_component_imports_only_the_library_and_itself(path):
    own = f"digits.components.{path.stem}"
    for name in _imports(path):
        if name.startswith(("digits.components", "digits.app", "digits.pipelines")):
            assert name == own, f"{path.name} imports {name}"
