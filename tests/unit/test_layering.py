"""Imports go one way (issue 21): no import circles, counting function-level imports, and the
never-rules of the layout (README "Layout"). Measured on the source by an AST walk, so a late
import cannot hide a circle; imports under ``if TYPE_CHECKING:`` never run and do not count. The
modules a task's ``hooks`` table names (``tasks/base.py``'s ``LazyTask``) count as imports too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "xvhpc"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for part in node.body for n in ast.walk(part)}
    return skip


def _targets(module: str, node: ast.Import | ast.ImportFrom, package: bool) -> set[str]:
    """The xvhpc modules an import statement loads (``from . import x`` → the submodule x)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module if package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        mod = node.module or ""
        mod = (f"{base}.{mod}" if mod else base) if node.level else mod
        names = [mod, *(f"{mod}.{a.name}" for a in node.names)]
    found = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            found.add(name)
    return found


def import_graph(typing_too: bool = False) -> dict[str, set[str]]:
    """Module → the xvhpc modules it imports; ``typing_too``: with ``if TYPE_CHECKING:`` ones."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        skip = set() if typing_too else _type_checking_nodes(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                edges |= _targets(module, node, path.name == "__init__.py")
        graph[module] = edges
    for module, named in hook_edges().items():
        graph[module] |= named
    return graph


def hook_edges() -> dict[str, set[str]]:
    """Each task.py → the modules its ``LazyTask.hooks`` rows name: imports that run at a hook's
    first call, named in a table instead of an import statement (importing task.py is cheap)."""
    from xvhpc.registry import load_task, task_infos

    edges = {}
    for name in task_infos():
        task = load_task(name)
        named = set()
        for target in getattr(task, "targets", {}).values():
            module = target.module
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            named.add(module)
        edges[type(task).__module__] = named
    return edges


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


GRAPH = import_graph()


def test_the_walk_sees_late_imports_and_skips_type_checking() -> None:
    """The measure itself: a function-level import is an edge, a TYPE_CHECKING one is not, a
    module a task's hooks table names is one."""
    assert "xvhpc.registry" in GRAPH["xvhpc.spec.task"]
    assert "xvhpc.tasks.base" not in GRAPH["xvhpc.registry"]  # TYPE_CHECKING only
    assert "xvhpc.tasks.detect.ingest" in GRAPH["xvhpc.tasks.detect.task"]  # a hooks row
    assert "xvhpc.data.shards" in GRAPH["xvhpc.tasks.classify.task"]  # "...data.shards:..."
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert circles(GRAPH) == []
    assert circles(import_graph(typing_too=True)) == []  # not even through type-only imports


def _reaches(source: str, target: str) -> list[str]:
    """``source`` modules that import a ``target`` module directly (regexes on dotted names)."""
    return sorted(
        f"{m} -> {t}"
        for m, edges in GRAPH.items()
        if re.fullmatch(source, m)
        for t in edges
        if re.fullmatch(target, t)
    )


def test_tasks_never_import_serve_or_pipeline() -> None:
    """A task plugs into the drivers and serve; it never reaches back up into them (the shared
    pieces, ``preprocessing`` and ``forward``, live in models/)."""
    assert _reaches(r"xvhpc\.tasks(\..*)?", r"xvhpc\.(serve|pipeline)(\..*)?") == []


def _rundir_file_names() -> set[str]:
    """rundir's file-name constants: every UPPERCASE str constant of xvhpc.rundir with a "."."""
    import xvhpc.rundir as rundir

    return {
        value
        for name, value in vars(rundir).items()
        if name.isupper() and isinstance(value, str) and "." in value
    }


def test_run_dir_file_names_only_in_rundir() -> None:
    """One run-dir layout: no module outside xvhpc/rundir/ spells one of its file names (they go
    through ``Layout``, ``BundleFiles``, ``PredictLayout`` or the constants)."""
    names = _rundir_file_names()
    assert {"plan.json", "meta.json", "progress.json", "decision.json"} <= names
    found = [
        f"{module}:{node.lineno}: {node.value!r}"
        for module, path in MODULES.items()
        if not module.startswith("xvhpc.rundir")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert found == []


COMPUTE = r"xvhpc\.(pipeline|tasks|serve|data|models|runtime|sweeps|stats|report|evaluation)(\..*)?"
SCHEDULER_SIDE = (
    r"xvhpc\.(plan|submit)(\..*)?|xvhpc\.backends\.[^.]+\.(scheduler|csm|classic|launcher)"
)


def test_the_compute_side_never_imports_the_login_side() -> None:
    """Training ranks, ingest workers and the server never load the plan, the submitter or a
    scheduler/launcher (only a backend's stdlib ``environment.py`` and ``backends.base``)."""
    assert _reaches(COMPUTE, SCHEDULER_SIDE) == []


def test_the_spec_names_no_task_or_backend() -> None:
    """The spec checks names through the registry (which finds the folders), never by import."""
    assert _reaches(r"xvhpc\.spec(\..*)?", r"xvhpc\.(tasks|backends|pipeline|plan)(\..*)?") == []


def test_the_pipeline_names_no_backend_but_its_environment() -> None:
    """The drivers ask runtime/whoami who they are; they never import a backend module."""
    assert _reaches(r"xvhpc\.pipeline(\..*)?", r"xvhpc\.backends(\..*)?") == []


def test_the_registry_and_rundir_are_leaves() -> None:
    """Everything may import them, so they import nothing above util and the spec."""
    assert _reaches(r"xvhpc\.registry", r"xvhpc\..*") == []
    assert _reaches(r"xvhpc\.rundir(\..*)?", r"xvhpc\.(?!rundir|util|spec).*") == []


def test_the_readme_layout_matches_the_tree() -> None:
    """README.md's Layout section names every package folder (and each task and backend
    folder), and names no folder that is gone."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"xvhpc/([a-z_]+)/", section))
    named |= set(re.findall(r"\b([a-z_]+)/(?=[\s,)`])", section))
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    plugged = {p.name for kind in ("tasks", "backends") for p in (PACKAGE / kind).iterdir()
               if (p / "__init__.py").is_file()}  # fmt: skip
    assert folders - named == set(), "package folders missing from the README's layout"
    assert plugged - named == set(), "task or backend folders missing from the README's layout"
    gone = {n for n in named if not (PACKAGE / n).is_dir()} - plugged
    assert gone == set(), "the README's layout names folders that are gone"


def test_no_task_imports_another() -> None:
    """A task's folder stands alone: what two tasks share lives below them (data/, models/)."""
    folders = "|".join(p.name for p in (PACKAGE / "tasks").iterdir() if p.is_dir())
    task_of = re.compile(rf"xvhpc\.tasks\.({folders})\.")
    crossing = sorted(
        f"{m} -> {t}"
        for m, edges in GRAPH.items()
        if (own := task_of.match(m + "."))
        for t in edges
        if (other := task_of.match(t + ".")) and other.group(1) != own.group(1)
    )
    assert crossing == []
