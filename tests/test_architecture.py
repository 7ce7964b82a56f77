"""The harness's shape, checked: layers that import only downwards, no cycles, and what
ships to other hosts needs nothing beyond the standard library.

The layers (README "Layout"), lowest first:

    model      scenario, image spec, placeholders, matchers, records  — stdlib only
    host       what runs where the runtime runs (the agent ships it)  — stdlib + model
    judge      verdicts from observations                             — model
    catalog    YAML files, schema, docs/catalog.md                    — model (+ yaml, jsonschema)
    hosts      local, qemu guests, testinfra backends                 — model, host (+ testinfra)
    reporting  the matrix document, its views, the baseline diff      — model (+ tabulate)
    plugin     the pytest layer                                       — everything
"""
from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conformance.hosts.targets import agent_zip

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "conformance"

#: Which layers each layer may import (itself included).
ALLOWED = {
    "model": {"model"},
    "host": {"model", "host"},
    "judge": {"model", "judge"},
    "catalog": {"model", "catalog"},
    "hosts": {"model", "host", "hosts"},
    "reporting": {"model", "reporting"},
    "plugin": {"model", "host", "judge", "catalog", "hosts", "reporting", "plugin"},
    "__main__": {"model", "catalog", "reporting"},
    "__init__": set(),
}
#: Third-party modules a layer may import; the agent's layers take none.
THIRD_PARTY = {
    "model": set(), "host": set(), "judge": set(), "__init__": set(),
    "catalog": {"yaml", "jsonschema", "referencing"},
    "hosts": {"testinfra"},
    "reporting": {"tabulate"},
    "plugin": {"pytest", "testinfra"},
    "__main__": set(),
}
#: The one host module that may use a third-party package, imported only on demand.
OPTIONAL_HOST_MODULES = {"conformance.host.testinfra_exec": {"testinfra"}}
#: Imports inside a function, each with its reason; none may exist to dodge a cycle.
FUNCTION_LEVEL = {
    ("conformance.host.inside", "conformance.host.testinfra_exec"):
        "testinfra is optional on a remote host: loaded only when a scenario has testinfra checks",
    ("conformance.host.agent", "runtime_ref.cli"):
        "the agent zip's runtime-ref verb: other verbs never load the reference runtime",
    ("conformance.hosts.connect", "conformance.hosts.qemu"):
        "guests (and testinfra, which they load) only when --hosts names one: a local run starts faster",
    ("conformance.host.drivers", "conformance.host.drivers.containerd"):
        "the engine lane's client only when a containerd/NAME runtime is asked for (or a killed run is swept)",
    ("conformance.host.drivers", "conformance.host.drivers.rootless"):
        "the rootless lane's user machinery only when a NAME:rootless runtime is asked for (or a sweep)",
    ("conformance.catalog.loaded_cache", "conformance.catalog.loader"):
        "the YAML loader (and PyYAML) only when a file is not in the cache: a cached collection parses nothing",
    ("conformance.plugin.items", "conformance.catalog.loader"):
        "the lenient YAML read of an invalid file's tags, only when a file does not load",
    ("conformance.plugin.hooks", "conformance.plugin.baseline_gate"):
        "the baseline comparison only when --baseline is given",
    ("conformance.plugin.matrix_report", "conformance.reporting.document"):
        "the matrix's writers only where it is written (not in xdist workers, not with --co)",
    ("conformance.plugin.matrix_report", "conformance.reporting.files"):
        "the matrix's writers (tabulate, the HTML page) only where it is written",
    ("conformance.plugin.matrix_report", "conformance.reporting.text"):
        "the terminal table only where the matrix was written",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import statement of one file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node) if n is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in in_function) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            # `from pkg import mod` imports the module pkg.mod when it is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (REPO / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (REPO / Path(*sub.split("."))).is_dir()
                found.append((sub if is_module else target, id(node) in in_function))
    return found


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def test_every_module_sits_in_a_known_layer():
    assert {_layer(m) for m in _graph()} <= set(ALLOWED)


def layer_violations(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    return [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})"
            for m, imports in graph.items() for t, _ in imports
            if t.startswith("conformance.") and _layer(t) not in ALLOWED[_layer(m)]]


def cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    edges = {m: sorted({t for t, _ in imports if t in graph}) for m, imports in graph.items()}
    found: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                found.append(" → ".join(path[path.index(nxt):] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    return found


def test_layers_import_only_downwards():
    assert layer_violations(_graph()) == []


def test_third_party_imports_stay_in_their_layers():
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for m, imports in _graph().items():
        allowed = THIRD_PARTY[_layer(m)] | OPTIONAL_HOST_MODULES.get(m, set())
        for t, _ in imports:
            top = t.split(".")[0]
            if top not in stdlib and top not in ("conformance", "runtime_ref") and top not in allowed:
                wrong.append(f"{m} imports {t}")
    assert wrong == []


def test_no_import_cycle():
    assert cycles(_graph()) == []


def test_function_level_imports_are_only_the_listed_optional_ones():
    found = {(m, t) for m, imports in _graph().items() for t, lazy in imports
             if lazy and (t.startswith("conformance") or t.startswith("runtime_ref"))}
    assert found == set(FUNCTION_LEVEL)


def _agent_modules() -> list[str]:
    return sorted(m for m in _graph() if _layer(m) in ("model", "host", "__init__")
                  and m not in OPTIONAL_HOST_MODULES)


def test_agent_modules_import_with_the_standard_library_alone():
    """``python -I -S``: no site-packages, no environment; every module the agent ships must import."""
    probe = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
             f"for m in {_agent_modules()!r}: __import__(m)\n"
             "import json; print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = {m.split(".")[0] for m in json.loads(done.stdout)}
    foreign = loaded - set(sys.stdlib_module_names) - {"conformance", "runtime_ref", "__main__", "_distutils_hack"}
    assert foreign == set()


def test_the_agent_zip_carries_only_the_host_layers_and_runs_isolated(tmp_path):
    zipped = tmp_path / "agent.pyz"
    zipped.write_bytes(agent_zip())
    names = zipfile.ZipFile(zipped).namelist()
    layers = {n.split("/")[1] for n in names if n.startswith("conformance/") and n.count("/") > 1}
    assert layers == {"model", "host"}
    assert any(n.startswith("runtime_ref/") for n in names)
    request = base64.b64encode(json.dumps({"runtimes": ["ref"]}).encode()).decode()
    done = subprocess.run(["python3", "-I", "-S", str(zipped), "describe", request],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["profile"]["kernel"] and "ref" in answer["runtimes"]


def test_the_checkers_can_fail():
    """A cycle and an upward import in a made-up graph are both reported."""
    graph = {"conformance.model.a": [("conformance.model.b", False)],
             "conformance.model.b": [("conformance.plugin.items", True)],
             "conformance.plugin.items": [("conformance.model.a", False)]}
    assert cycles(graph) == ["conformance.model.a → conformance.model.b → conformance.plugin.items → conformance.model.a"]
    assert layer_violations(graph) == ["conformance.model.b (model) imports conformance.plugin.items (plugin)"]
