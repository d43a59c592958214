"""Layout and the NumPy-free rule of the package."""

import ast
import subprocess
import sys
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
