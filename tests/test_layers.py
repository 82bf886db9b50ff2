"""Imports go one way through hopstack's layers, with no exceptions (module-level and function-level imports
alike): errors and core at the bottom; then models, index, datasets; components; graphs; spec; experiments
and training; serve; and the command line on top. A module may import its own layer and any layer below it."""

import ast
from pathlib import Path

import hopstack

PACKAGE = Path(hopstack.__file__).parent

LAYERS = [
    ("hopstack", "hopstack.errors", "hopstack.core"),
    ("hopstack.models",),
    ("hopstack.index",),
    ("hopstack.datasets",),
    ("hopstack.components",),
    ("hopstack.graphs",),
    ("hopstack.spec",),
    ("hopstack.experiments", "hopstack.training"),
    ("hopstack.serve", "hopstack.demo"),
    ("hopstack.cli", "hopstack.launcher", "hopstack.__main__", "hopstack.testing"),
]


def layer_of(module: str) -> int:
    """The layer of a hopstack module: that of the longest layer prefix it lies under."""
    best, depth = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = level, prefix.count(".")
    assert best is not None, f"{module} is in no layer"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hopstack_imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a hopstack module anywhere in ``source`` (a module of ``package``),
    relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name if _is_module(name) else base) for name in names]
    return [(line, name) for line, name in found if name == "hopstack" or name.startswith("hopstack.")]


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (PACKAGE.parent / relative).is_dir()


def test_imports_go_one_way():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for line, imported in hopstack_imports(path.read_text(encoding="utf-8"), package):
            if layer_of(imported) > layer_of(importer):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_check_sees_function_level_and_relative_imports():
    source = "import os\n\ndef f():\n    from hopstack.serve.app import create_app\n    from ..graphs import runner\n"
    assert hopstack_imports(source, "hopstack.core") == [(4, "hopstack.serve.app"), (5, "hopstack.graphs.runner")]
    assert layer_of("hopstack.serve.app") > layer_of("hopstack.core.spec")
    assert layer_of("hopstack.core.spec") == layer_of("hopstack.errors") < layer_of("hopstack.models.llm")
