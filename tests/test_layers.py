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
    ("config", "registry", "runs", "runfiles", "cost", "provenance", "text", "resources", "distributed", "progress"),
    ("data",),
    ("prompts",),
    ("models",),
    ("eval",),
    ("train",),
    ("heads",),
    ("kinds",),
    ("sft", "study", "report", "publish"),
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


# -- no import circles --------------------------------------------------------------------------------------------
def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the fgvlm modules it imports (every import: top-level, lazy, ``TYPE_CHECKING``), from
    ``{module: (source, is_package)}``. A target that is not a module (``from fgvlm.a.b import name`` where ``b``
    is a module is fine; ``import fgvlm.a.b.attr`` is not possible) maps to its longest module prefix. Only the
    imports written count: importing ``fgvlm.a.b`` also runs ``fgvlm.a``'s ``__init__``, but that is Python's
    package machinery, not a circle a reader has to untangle."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = set()
        for _, target in imported_modules(source, module, is_package):
            while target not in sources and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in sources and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circle_anywhere():
    sources = {module_name(path): (path.read_text(), path.name == "__init__.py") for path in all_modules()}
    cycles = import_cycles(import_graph(sources))
    assert not cycles, "modules that import each other (directly or in a ring):\n" + "\n".join(map(str, cycles))


def test_cycle_checker_finds_a_planted_circle():
    """sft/run.py and sft/outputs.py importing each other (lazily) was the circle this test was written for."""
    planted = {
        "fgvlm.sft.run": ("def f():\n    from fgvlm.sft.outputs import finish\n", False),
        "fgvlm.sft.outputs": ("from fgvlm.sft.run import MODEL_DIR\n", False),
        "fgvlm.sft.a": ("from fgvlm.sft.b import x\n", False),
        "fgvlm.sft.b": ("if TYPE_CHECKING:\n    from fgvlm.sft.c import y\n", False),
        "fgvlm.sft.c": ("import fgvlm.sft.a\n", False),
        "fgvlm.sft.d": ("from fgvlm.sft.a import x\n", False),
    }
    assert import_cycles(import_graph(planted)) == [
        ["fgvlm.sft.a", "fgvlm.sft.b", "fgvlm.sft.c"],
        ["fgvlm.sft.outputs", "fgvlm.sft.run"],
    ]
    del planted["fgvlm.sft.outputs"]
    del planted["fgvlm.sft.c"]
    assert import_cycles(import_graph(planted)) == []


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


# -- family names and backend internals stay in their home -----------------------------------------------------------
FAMILIES_DIR = SRC / "models" / "families"
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _family_constant(node: ast.AST, names: set[str]) -> str | None:
    is_name = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    return node.value if is_name else None


def family_name_uses(source: str, names: set[str]) -> list[str]:
    """``line: name`` for each family name that ``source`` compares against (``==``, ``!=``, ``in``, ``not in``,
    ``case``) or keeps in a table (an element of a tuple/list/set literal, a dict literal's key)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        candidates: list[ast.AST] = []
        if isinstance(node, ast.Compare) and any(isinstance(op, COMPARISONS) for op in node.ops):
            candidates = [node.left, *node.comparators]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            candidates = list(node.elts)
        elif isinstance(node, ast.Dict):
            candidates = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.MatchValue):
            candidates = [node.value]
        found |= {(node.lineno, name) for c in candidates if (name := _family_constant(c, names))}
    return [f"{line}: {name!r}" for line, name in sorted(found)]


def registered_family_names() -> set[str]:
    from fgvlm.models.families import family_names

    return set(family_names())


def test_no_module_outside_the_family_records_compares_family_names():
    names = registered_family_names()
    problems = []
    for path in all_modules():
        if FAMILIES_DIR in path.parents:
            continue
        problems += [f"{module_name(path)}:{use}" for use in family_name_uses(path.read_text(), names)]
    assert not problems, "family facts outside FamilyRecord (add a record field instead):\n" + "\n".join(problems)


DATA_DIR = SRC / "data"


def test_no_module_outside_the_dataset_classes_compares_dataset_names():
    """Dataset facts (object word, head prompt, offline flag, download, aliases) live on the dataset class."""
    from fgvlm.registry import DATASETS

    assert family_name_uses('OFFLINE_DATASETS = ("synthflowers",)\n', set(DATASETS))  # the table it replaced
    problems = []
    for path in all_modules():
        if DATA_DIR in path.parents or path == SRC / "registry.py":
            continue
        problems += [f"{module_name(path)}:{use}" for use in family_name_uses(path.read_text(), set(DATASETS))]
    assert not problems, "dataset facts outside the dataset class (add a class attribute):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        'encoder_decoder = family == "instructblip-t5"\n',
        'if family != "qwen3-vl":\n    pass\n',
        'PACKING_FAMILIES = ("qwen3-vl", "qwen2.5-vl")\nok = family in PACKING_FAMILIES\n',
        'ok = family not in {"idefics2"}\n',
        'PROMPTS = {"smolvlm": "x"}\n',
        'match family:\n    case "instructblip":\n        pass\n',
    ],
)
def test_family_name_checker_finds_comparisons_and_tables(source):
    assert family_name_uses(source, registered_family_names())


def test_family_name_checker_allows_calls_defaults_and_other_strings():
    source = (
        'def f(family: str = "qwen3-vl"):\n'
        '    return build_tiny_model("qwen3-vl", "/tmp/x"), get_family(family).encoder_decoder\n'
        'ok = name == "tiny-qwen3-vl" or kind in ("sft", "eval")\n'
    )
    assert family_name_uses(source, registered_family_names()) == []


def backend_private_methods() -> set[str]:
    """Underscore (not dunder) methods and properties of ``HFBackend`` and its subclasses under ``models/``."""
    classes: dict[str, tuple[list[str], list[str]]] = {}  # class -> (base names, private method names)
    for path in sorted((SRC / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                methods = [
                    item.name
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and item.name.startswith("_")
                    and not item.name.endswith("__")
                ]
                classes[node.name] = (bases, methods)
    backends = {"HFBackend"}
    grew = True
    while grew:
        more = {name for name, (bases, _) in classes.items() if set(bases) & backends} - backends
        backends |= more
        grew = bool(more)
    return {method for name in backends for method in classes[name][1]}


def private_backend_uses(source: str, private: set[str]) -> list[str]:
    """``line: .name`` for each attribute of ``source`` that names a backend's private method on an object other than
    ``self``/``cls``/``super()`` (code outside ``models/`` must use the public API)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or node.attr not in private:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_nothing_outside_models_calls_a_backend_private_method():
    private = backend_private_methods()
    assert {"_forward", "_hidden_states", "_prefill", "_score_packed"} <= private  # the checker sees the backends
    problems = []
    for path in all_modules():
        if SRC / "models" in path.parents:
            continue
        problems += [f"{module_name(path)}:{use}" for use in private_backend_uses(path.read_text(), private)]
    assert not problems, "private backend methods used outside models/ (use the public API):\n" + "\n".join(problems)


def test_private_backend_checker_finds_a_planted_call():
    private = backend_private_methods()
    planted = "def features(backend, inputs):\n    return backend._hidden_states(backend._forward(inputs))\n"
    assert len(private_backend_uses(planted, private)) == 2
    assert private_backend_uses("class A:\n    def f(self):\n        return self._forward(1)\n", private) == []
