"""Apps import one way (docs/ARCHITECTURE.md): never from an app above their own."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Higher layers may import lower ones; apps on one layer never import each other.
LAYERS = {
    "emergence": 4,
    "chat": 3,
    "sessions_app": 2,
    "accounts": 1,
    "realtime": 1,
    "ops": 0,
}
# "app.Model" in a model field names another app's model as surely as an import.
MODEL_REFERENCE = re.compile(r"""["'](\w+)\.[A-Z]\w*["']""")


def _modules(app: str) -> list[Path]:
    return [
        path
        for path in sorted((ROOT / app).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def _imported_apps(path: Path) -> set[str]:
    """Every project app a module imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in LAYERS)
    if path.name == "models.py":
        found.update(
            m for m in MODEL_REFERENCE.findall(path.read_text()) if m in LAYERS
        )
    return found


def _violations(app: str) -> list[str]:
    wrong = []
    for path in _modules(app):
        for other in _imported_apps(path) - {app}:
            if LAYERS[other] >= LAYERS[app]:
                wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    return wrong


@pytest.mark.parametrize("app", sorted(LAYERS))
def test_app_imports_only_lower_apps(app):
    assert _violations(app) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    package = tmp_path / "ops"
    package.mkdir()
    (package / "bad.py").write_text("def f():\n    from chat import services\n")
    (package / "models.py").write_text('FK = "sessions_app.ChatSession"\n')
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert sorted(_violations("ops")) == [
        "ops/bad.py imports chat",
        "ops/models.py imports sessions_app",
    ]
