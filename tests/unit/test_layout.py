"""The codebase's shape, kept: files a newcomer can read, no import circles, a runtime
without Django, one app per concern.

Imports are read from the source (ast), those inside functions too: an import
moved into a function still ties the two modules together.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("labs", "runtime", "bench")
MAX_LINES = 600


def _modules() -> dict:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts or "content" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set:
    """Every module (of ours or not) that `name` imports, by its dotted name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = [f"{base}.{alias.name}" for alias in node.names]
            # `from pkg import module` imports the module itself
            out.update([s for s in subs if s in modules] or [base])
    return out


def _graph() -> dict:
    modules = _modules()
    return {name: {t for t in _imports(name, path, modules) if t in modules and t != name}
            for name, path in modules.items()}


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_is_longer_than_a_newcomer_can_read():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if p.parts[len(ROOT.parts)] in ("labs", "runtime")
            and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_runtime_knows_nothing_of_the_site():
    modules = _modules()
    for name, path in modules.items():
        if not name.startswith("runtime"):
            continue
        bad = {i for i in _imports(name, path, modules)
               if i.split(".")[0] in ("django", "channels", "celery", "labs", "bench", "tests")}
        assert bad == set(), name


def test_the_product_does_not_import_its_bench_or_tests():
    modules = _modules()
    for name, path in modules.items():
        if name.split(".")[0] in ("labs", "runtime"):
            bad = {i for i in _imports(name, path, modules) if i.split(".")[0] in ("bench", "tests")}
            assert bad == set(), name


def test_the_site_is_one_app_per_concern():
    from django.apps import apps
    ours = [a for a in apps.get_app_configs() if a.name.startswith("labs.")]
    assert {a.label for a in ours} >= {"accounts", "courses", "sandboxes", "classrooms"}
    for app in ours:
        where = Path(app.path)
        for part in ("models.py", "views.py", "admin.py", "urls.py", "migrations"):
            assert (where / part).exists(), f"{app.label} has no {part}"
