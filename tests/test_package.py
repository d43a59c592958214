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


def test_module_entry_point_help_loads_no_framework():
    """`fer-jax --help` answers at once: neither it nor `import fer_jax` loads JAX, torch or OpenCV (about 8 s
    of imports); the package's public names still resolve, each from its module, when first used."""
    heavy = ("jax", "torch", "torchvision", "cv2", "flax")
    script = (
        "import runpy, sys\n"
        "sys.argv = ['fer-jax', '--help']\n"
        "try:\n    runpy.run_module('fer_jax', run_name='__main__')\n"
        "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
        "import fer_jax\n"
        f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    for command in ("download", "train", "evaluate"):
        assert command in out
    assert out.strip().endswith("loaded: []")

    import fer_jax
    from fer_jax.data import fer2013
    from fer_jax.infer import predict

    assert (fer_jax.predict, fer_jax.Face) == (predict.predict, predict.Face)
    assert (fer_jax.load_fer2013, fer_jax.EMOTIONS, fer_jax.DataError) == (
        fer2013.load_fer2013,
        fer2013.EMOTIONS,
        fer2013.DataError,
    )
    assert set(fer_jax.__all__) <= set(dir(fer_jax))


# The package's layers, lowest first: a module may import its own layer and those below, never above.
# Top-level modules are either the core every layer uses or the commands on top of everything.
LAYERS = {
    "fer_jax.config": 0,
    "fer_jax.files": 0,
    "fer_jax.environment": 0,
    "fer_jax.errors": 0,
    "fer_jax.data": 1,
    "fer_jax.models": 2,
    "fer_jax.train": 3,
    "fer_jax.eval": 4,
    "fer_jax.baseline": 5,
    "fer_jax.infer": 6,
    "fer_jax.colab": 7,
    "fer_jax.compare": 7,
    "fer_jax.demo": 7,
    "fer_jax.commands": 7,
    "fer_jax.cli": 7,
    "fer_jax.__main__": 7,
    "fer_jax": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports() -> dict[str, set[str]]:
    """fer_jax module -> the fer_jax modules it imports anywhere in its file (function-level imports too)."""
    modules = {module_name(path) for path in (ROOT / "fer_jax").rglob("*.py")}
    graph = {}
    for path in sorted((ROOT / "fer_jax").rglob("*.py")):
        module = module_name(path)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                # from fer_jax.train import loop: the module fer_jax.train.loop
                imported |= {f"{node.module}.{alias.name}" for alias in node.names} & modules
        graph[module] = {name for name in imported if name.startswith("fer_jax.") and name != module}
    return graph


def layer_of(module: str) -> int:
    """The layer of a module: its own entry, else its subpackage's."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def test_every_module_has_a_layer():
    unplaced = [module for module in package_imports() if module.count(".") == 1 and module not in LAYERS]
    assert unplaced == [], "add each new top-level module or subpackage to LAYERS"


def test_no_import_points_up_the_layers():
    graph = package_imports()
    assert (
        "fer_jax.train.trainer" in graph["fer_jax.compare"] and "fer_jax.infer.detect" in graph["fer_jax.infer.predict"]
    )
    upward = sorted(
        f"{module} -> {name}"
        for module, imported in graph.items()
        for name in imported
        if layer_of(name) > layer_of(module)
    )
    assert upward == []


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
