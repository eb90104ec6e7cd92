"""Each package's face (semfuse_rt/lazy_exports.py) offers the names it lists, from the
modules it names, and the names under its `if TYPE_CHECKING:` are the same: the CLI imports
only faces (pyproject.toml's import contracts), so a face that drifts from its modules would
break a command at its first use."""
import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "semfuse_rt"
FACES = sorted(path for path in PACKAGE.rglob("__init__.py") if "lazy_exports(__name__" in path.read_text())


def _package(path: Path) -> str:
    return ".".join(("semfuse_rt", *path.parent.relative_to(PACKAGE).parts))


def _lists(path: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(names imported under TYPE_CHECKING -> module, the lazy map -> module, __all__)."""
    package = _package(path)
    typed, lazy, listed = {}, {}, []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module is not None
                typed.update({alias.name: statement.module for alias in statement.names})
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            mapping = node.value.args[1]
            assert isinstance(mapping, ast.Dict)
            lazy = {key.value: f"{package}.{value.value}" for key, value in zip(mapping.keys, mapping.values)}
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            listed = [element.value for element in node.value.elts]
    return typed, lazy, listed


def test_there_are_faces():
    assert len(FACES) >= 10


@pytest.mark.parametrize("path", FACES, ids=lambda path: _package(path))
def test_a_face_lists_each_name_once_and_from_where_it_is(path):
    typed, lazy, listed = _lists(path)
    assert typed == lazy
    assert sorted(listed) == sorted(lazy)
    package = importlib.import_module(_package(path))
    for name, module in lazy.items():
        assert getattr(package, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        package.not_a_name


def test_a_face_hands_out_what_the_module_holds_now(monkeypatch):
    import semfuse_rt.engine.semantic as face
    from semfuse_rt.engine.semantic import classifier

    monkeypatch.setattr(classifier, "load_classifier", "stand-in")
    assert face.load_classifier == "stand-in"
