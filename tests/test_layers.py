"""Imports point down: a module may import its own layer or a lower one, never a higher one.

Every module under ``src/fgvlm`` is parsed (not imported), and every import in it is checked: top-level ones,
function-level (lazy) ones, ``TYPE_CHECKING`` ones, relative ones and ``importlib.import_module("fgvlm...")`` calls
with a literal name. The registry's ``"module:attribute"`` strings are data, not imports, and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fgvlm"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "registry", "runs", "text", "resources", "distributed", "progress"),
    ("data",),
    ("prompts",),
    ("models",),
    ("eval",),
    ("train",),
    ("heads",),
    ("kinds",),
    ("sft", "study", "report"),
    ("commands", "cli", "__main__", "__init__"),
)
"""Bottom first. The key of a module is its first name below ``fgvlm`` (``fgvlm.data.base`` -> ``data``);
``__init__`` is the package root ``fgvlm`` itself, whose lazy ``match_answer`` reaches into ``eval``. ``train`` (the
training loop, optimisers, the CNN baselines) sits below ``heads``: heads train with its optimiser and runtime, and
nothing in ``train`` needs a head. ``kinds`` (the table of runnable kinds) names the run functions of the layers
below it as ``"module:function"`` strings; the study runner above it reads the table."""

LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """``src/fgvlm/data/base.py`` -> ``fgvlm.data.base``; a package's ``__init__.py`` -> the package."""
    parts = ["fgvlm", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def layer_key(module: str) -> str:
    """The layer table's key for a module name inside fgvlm (``fgvlm`` alone is the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve_relative(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, fgvlm module)`` for every import of a fgvlm module anywhere in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_relative(module, is_package, node) if node.level else (node.module or "")
            if target == "fgvlm":  # ``from fgvlm import data`` imports the submodule ``fgvlm.data``
                found += [(node.lineno, f"fgvlm.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return [(line, name) for line, name in found if name == "fgvlm" or name.startswith("fgvlm.")]


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import in ``source`` (the text of ``module``) that reaches a higher layer, as a readable line."""
    own = LEVEL[layer_key(module)]
    problems = []
    for line, target in imported_modules(source, module, is_package):
        key = layer_key(target)
        if key in LEVEL and LEVEL[key] > own:
            problems.append(f"{module}:{line} imports {target} ({key}, layer {LEVEL[key]} > {own})")
    return problems


def all_modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    keys = {layer_key(module_name(path)) for path in all_modules()}
    unknown = sorted(keys - set(LEVEL))
    assert not unknown, f"add these to LAYERS in {__file__}: {unknown}"


def test_every_import_target_has_a_layer():
    unknown = set()
    for path in all_modules():
        module = module_name(path)
        for _, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if layer_key(target) not in LEVEL:
                unknown.add(f"{module} -> {target}")
    assert not unknown, sorted(unknown)


def test_no_import_runs_up_the_layers():
    problems = []
    for path in all_modules():
        problems += upward_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, "imports that point up:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        # the two that were there before text.py and data.base.dataset_identity: a lazy one and a top-level one
        ("fgvlm.prompts.distractors", "def f():\n    from fgvlm.eval.matching import normalize_words\n"),
        ("fgvlm.train.images", "from fgvlm.heads.cache import dataset_identity\n"),
        ("fgvlm.data.base", "if TYPE_CHECKING:\n    import fgvlm.models.backend\n"),
        ("fgvlm.models.backend", "from fgvlm import heads\n"),
        ("fgvlm.eval.zeroshot", "from ..commands import eval\n"),
        ("fgvlm.text", "import importlib\nimportlib.import_module('fgvlm.data.base')\n"),
    ],
)
def test_checker_finds_upward_imports(module, source):
    assert len(upward_imports(source, module)) == 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("fgvlm.prompts.distractors", "from fgvlm.text import normalize_words\n"),
        ("fgvlm.heads.training", "from fgvlm.train.loop import x\nfrom . import cache\n"),
        ("fgvlm.commands.eval", "from fgvlm.eval.zeroshot import evaluate\nimport torch\n"),
    ],
)
def test_checker_allows_downward_and_sideways_imports(module, source):
    assert upward_imports(source, module) == []
