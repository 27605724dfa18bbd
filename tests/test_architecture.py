"""The folders tell the architecture, and this test holds the code to it.

Inside the service, a request travels transport → steps → adapters, with configuration and observability
beside them and one composition root (`app/`) that alone knows every concrete part:

- `steps/` (the domain) imports nothing else of the service, and no transport, SDK or telemetry library;
- `adapters/` implement the domain's ports: they import the domain only;
- `observability/` and `config/` import the domain only;
- `transport/` imports the domain, configuration, observability and the step runner (`app/execution.py`,
  the application service it drives), never an adapter;
- `app/` wires them all.

Imports are read from the source (relative ones resolved), and no distribution may have an import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "otp_step_service": ROOT / "server" / "otp-step-service" / "src",
    "cognito_emulator": ROOT / "server" / "cognito-emulator" / "src",
    "otp_step_demo": ROOT / "server" / "otp-step-demo" / "src",
    "otp_step_client": ROOT / "client" / "otp-step-client" / "src",
}
SERVICE = "otp_step_service"
# What each layer of the service may import from the service (besides itself).
# The step runner is the application service the transport drives: the one module of app/ it may import.
TRANSPORT_MAY_RUN = "otp_step_service.app.execution"
LAYERS: dict[str, frozenset[str]] = {
    "steps": frozenset(),
    "adapters": frozenset({"steps"}),
    "observability": frozenset({"steps"}),
    "config": frozenset({"steps"}),
    "transport": frozenset({"steps", "config", "observability"}),
    "app": frozenset({"steps", "adapters", "observability", "config", "transport"}),
}
# The package's own root modules: the docstring and `python -m otp_step_service`.
ROOT_MODULES = {"otp_step_service", "otp_step_service.__main__"}
DOMAIN_FORBIDDEN = (
    "grpc",
    "google",
    "stepexecutor",
    "boto3",
    "botocore",
    "aiobotocore",
    "opentelemetry",
    "redis",
)
DOMAIN_FORBIDDEN += ("jwt", "aiohttp", "prometheus_client")


@dataclass(frozen=True)
class Import:
    """One import of one module: the module it names, and whether it only runs for the type checker."""

    target: str
    line: int
    typing_only: bool


def _module_name(path: Path, source: Path) -> str:
    parts = list(path.relative_to(source).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for source in SOURCES.values():
        for path in source.rglob("*.py"):
            found[_module_name(path, source)] = path
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The absolute names an `import from` brings in: the module itself, or its submodules when named."""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return names or [target]


def _typing_only_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str) -> Iterator[Import]:
    """Every import in the module, wherever it is written (a function-level import is a dependency too)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    typing_only = _typing_only_lines(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = _resolve(module, path, node)
        else:
            continue
        for target in targets:
            yield Import(target, node.lineno, node.lineno in typing_only)


def _layer(module: str) -> str | None:
    """The layer a service module is in: the package under otp_step_service it belongs to, or is."""
    parts = module.split(".")
    return parts[1] if parts[0] == SERVICE and len(parts) > 1 and parts[1] != "__main__" else None


SERVICE_MODULES = sorted(m for m in MODULES if m.split(".")[0] == SERVICE)


def test_every_service_module_is_in_a_layer() -> None:
    loose = [m for m in SERVICE_MODULES if m not in ROOT_MODULES and _layer(m) not in LAYERS]
    assert not loose, f"modules outside every layer ({', '.join(LAYERS)}): {loose}"


def _leaks(module: str) -> list[tuple[str, int]]:
    layer = _layer(module)
    if layer is None:
        return []
    allowed = LAYERS[layer] | {layer}
    return [
        (found.target, found.line)
        for found in imports_of(module)
        if found.target.split(".")[0] == SERVICE
        and found.target not in ROOT_MODULES
        and _layer(found.target) not in allowed
        and not (layer == "transport" and found.target == TRANSPORT_MAY_RUN)
    ]


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_each_layer_imports_only_what_it_may(module: str) -> None:
    leaks = [f"{module}:{line} imports {target}" for target, line in _leaks(module)]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("module", [m for m in SERVICE_MODULES if _layer(m) == "steps"])
def test_the_domain_imports_no_transport_sdk_or_telemetry(module: str) -> None:
    leaked = [f.target for f in imports_of(module) if f.target.split(".")[0] in DOMAIN_FORBIDDEN]
    assert not leaked, f"{module} imports {sorted(leaked)}"


def test_the_product_imports_no_demo_emulator_or_test_tooling() -> None:
    foreign = {"cognito_emulator", "otp_step_demo", "otp_step_client", "moto", "pytest", "hypothesis"}
    leaks = [
        f"{module}:{found.line} imports {found.target}"
        for module in SERVICE_MODULES
        for found in imports_of(module)
        if found.target.split(".")[0] in foreign
    ]
    assert not leaks, "\n".join(leaks)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules around it, or None (an iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


@pytest.mark.parametrize("distribution", sorted(SOURCES))
def test_no_import_cycle(distribution: str) -> None:
    modules = [m for m in MODULES if m.split(".")[0] == distribution]
    graph = {
        module: {
            found.target
            for found in imports_of(module)
            if not found.typing_only
            and found.target in MODULES
            and found.target != module
            # A package's __init__ re-exporting its modules is not a cycle with them.
            and not module.startswith(found.target + ".")
        }
        for module in modules
    }
    cycle = _cycle(graph)
    assert cycle is None, " → ".join(cycle or [])


def test_the_guard_sees_relative_imports_and_cycles() -> None:
    """The guard itself: a relative import resolves, and a two-module cycle is found."""
    node = ast.parse("from .model import CognitoError").body[0]
    assert isinstance(node, ast.ImportFrom)
    steps = MODULES["otp_step_service.steps.validate"]
    assert _resolve("otp_step_service.steps.validate", steps, node) == ["otp_step_service.steps.model"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    """A module that long does several jobs: split it by what they are (generated code aside)."""
    sources = [*MODULES.values(), *ROOT.glob("bench/**/*.py"), *ROOT.glob("scripts/*.py")]
    long = {
        str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
