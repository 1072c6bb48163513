"""The package's import graph has no cycles and no upward imports.

Every module of src/unixcxr is parsed (ast, so imports inside functions count too: a lazy import
hides a cycle from Python, not from the design). Layers, lowest first; a subpackage may import its
own modules and those of lower layers only:

    base       unixcxr (the version), labels, validation, files: no imports of our own
    flow       the flow-matching math;   labeler   the rule-based report labeler
    model      the network, its configuration and its folder on disk
    data       data sets, tokenizer, batches, cleaning
    inference  decoding with a model;    evaluate  metrics
    train      the training stages;      pipeline  the user-facing UniXPipeline
    demo       the end-to-end demo;      serve     the HTTP / Gradio service
    cli        the command line;         __main__  `python -m unixcxr`
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import unixcxr

ROOT = Path(unixcxr.__file__).parent
LAYERS = [
    {"unixcxr", "labels", "validation", "files", "strict"},
    {"flow", "labeler"},
    {"model"},
    {"data"},
    {"inference", "evaluate"},
    {"train", "pipeline"},
    {"demo", "serve"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports anywhere in its body (a `from pkg import sub` names pkg.sub)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _unit(module: str) -> str:
    """The layering unit of a module: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "unixcxr"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_every_subpackage_has_a_layer():
    assert {_unit(m) for m in _modules()} <= set(RANK), {_unit(m) for m in _modules()} - set(RANK)


def test_no_module_imports_a_higher_or_sideways_layer():
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if _unit(a) != _unit(b) and RANK[_unit(b)] >= RANK[_unit(a)]
    )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycle_between_subpackages():
    units: dict[str, set[str]] = defaultdict(set)
    for a, targets in import_graph().items():
        units[_unit(a)].update(_unit(b) for b in targets if _unit(b) != _unit(a))
    assert not _cycles(dict(units))


def test_no_import_cycle_between_modules():
    # a package's __init__ re-exporting its submodules is not a cycle of the design: leave out the
    # edges from a package to its own submodules
    graph = {a: {b for b in targets if not b.startswith(a + ".")} for a, targets in import_graph().items()}
    assert not _cycles(graph), _cycles(graph)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from unixcxr.model import config\n    import unixcxr.labels\n")
    assert _imports("unixcxr.x", source, {"unixcxr.model", "unixcxr.model.config", "unixcxr.labels"}) == {
        "unixcxr.model", "unixcxr.model.config", "unixcxr.labels"}


def test_the_command_line_parser_loads_without_torch():
    """`unixcxr --help` builds the parser from every subcommand module: none of them may pull in torch
    (and with it the model) at import or registration (cli/__init__.py says why)."""
    code = ("import sys; from unixcxr.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'unixcxr.model.unix', 'unixcxr.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_model_file_holds_training_concerns():
    """model/ is the network: torch.compile and FLOP counting live in train/ (compile.py, flops.py)."""
    model = Path(unixcxr.__file__).parent / "model"
    for path in model.glob("*.py"):
        text = path.read_text()
        assert "torch.compile(" not in text and "FlopCounterMode" not in text, path.name
