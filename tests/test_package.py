"""Layout, the NumPy-free rule of the package, and how a run records its command."""

import ast
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_layout():
    for name in ("fer_jax", "experiments", "notebooks", "tests", "pyproject.toml", "README.md", ".ci/run", "Makefile"):
        assert (ROOT / name).exists(), name


def test_package_never_imports_numpy():
    offenders = []
    for path in (ROOT / "fer_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}:{node.lineno}" for name in names if name.split(".")[0] == "numpy"]
    assert offenders == []


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "fer_jax", "--help"], capture_output=True, text=True, check=True)
    for command in ("download", "train", "evaluate"):
        assert command in out.stdout


def package_imports() -> dict[str, set[str]]:
    """fer_jax module -> the fer_jax modules it imports anywhere in its file (function-level imports too)."""
    graph = {}
    for path in sorted((ROOT / "fer_jax").glob("*.py")):
        module = f"fer_jax.{path.stem}"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                if node.module == "fer_jax":  # from fer_jax import data
                    imported |= {f"fer_jax.{alias.name}" for alias in node.names}
        graph[module] = {name for name in imported if name.startswith("fer_jax.") and name != module}
    return graph


def test_no_import_circles_in_the_package():
    graph = package_imports()
    assert graph["fer_jax.compare"] and "fer_jax.cli" not in graph["fer_jax.compare"]

    def cycle_from(start: str, node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [nxt]
            if nxt not in path and (found := cycle_from(start, nxt, path + [nxt])):
                return found
        return None

    cycles = [cycle for module in graph if (cycle := cycle_from(module, module, [module]))]
    assert cycles == []


def test_commands_are_recorded_as_typed(monkeypatch):
    from fer_jax.environment import command_line

    monkeypatch.setattr(sys, "argv", ["/repo/experiments/run.py", "cpu_best", "--data", "a b.zip"])
    monkeypatch.setitem(
        sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name="experiments.run"))
    )
    assert command_line() == "python -m experiments.run cpu_best --data 'a b.zip'"
    monkeypatch.setitem(
        sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name="fer_jax.__main__"))
    )
    assert command_line().startswith("python -m fer_jax cpu_best")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/fer-jax", "train", "--quick"])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    assert command_line() == "fer-jax train --quick"
