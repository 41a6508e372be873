"""The imports of a Python source, read from its AST (nothing is imported): shared by the layering
tests (tests/test_layering.py, tests/test_experiments_layout.py)."""

from __future__ import annotations

import ast


def imports(source: str, package: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, ["module.name" for each `from module import name`]) for every import
    in `source`, a module of `package`; relative imports are resolved against `package`. Imports
    inside functions count. A `from m import n` lists "m.n" because n may be a submodule."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(parent + ([node.module] if node.module else []))
            out.append((node.lineno, module, [f"{module}.{alias.name}" for alias in node.names]))
    return out
