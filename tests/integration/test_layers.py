r"""The packages and what each may import: the real graph, checked on every import.

    shardvec/ (API, CLI, server over flows/; reader.py reads a version: search, inputs, changes' segments)
        |
    flows/ (the pipeline: Prefect and Dask)
        |            |            |
  tasks.models  tasks.changes  tasks.quality     building a version | changing a published one | judging it
        \____________|____________/              (quality stands on search and storage only)
        tasks.search   tasks.inputs                the top-k kernel, indexes, rows | corpus, tokens
              \_________/
            tasks.storage                          files, spaces, keys, the ledger, CURRENT

Only the pipeline (flows/) and the operating commands (shardvec/cli.py, shardvec/alerts.py,
shardvec/server.py) import Prefect and Dask; the reader API imports neither them nor gensim.
Every import counts, those inside functions too: a lazy import is still a dependency, and a
cycle through one is still a missing owner.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
FOLDERS = ("tasks", "flows", "shardvec", "config")
# package -> the packages its modules may import (shardvec.errors and config anywhere)
MAY_IMPORT = {
    "tasks.storage": set(),
    "tasks.inputs": {"tasks.storage"},
    "tasks.search": {"tasks.storage"},
    "tasks.models": {"tasks.storage", "tasks.inputs", "tasks.search"},
    "tasks.changes": {"tasks.storage", "tasks.inputs", "tasks.search"},
    "tasks.quality": {"tasks.storage", "tasks.search"},
}
READER = {"shardvec.reader", "shardvec.embedding"}
ORCHESTRATION = ("prefect", "prefect_dask", "dask", "distributed")


def _files(folders=FOLDERS) -> list[Path]:
    return sorted(
        p
        for d in folders
        for p in (ROOT / d).rglob("*.py")
        if not {".venv", "work", "golden"} & set(p.relative_to(ROOT).parts)
    )


def _module(path: Path) -> str:
    """The module's name, without the `shardvec.` its folder installs under (tasks/search/topk.py:
    tasks.search.topk; a package's __init__: the package)."""
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _package(module: str) -> str | None:
    """tasks.search.topk -> tasks.search; None outside tasks/."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 1 else None


def _raw_imports(path: Path, members: bool = False) -> set[str]:
    """Every module a file imports (and with `members`, module.name of each `from` import)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | ({f"{node.module}.{a.name}" for a in node.names} if members else set())
    return names


def _module_attributes(path: Path) -> set[str]:
    """module.name of every attribute read through an imported module (`from shardvec.tasks.search
    import index` then `index.open_index`, or `import shardvec.tasks.search.index as ix`): names a
    file uses from a module without naming them in its import."""
    tree = ast.parse(path.read_text())
    modules = {}  # local name -> the module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname: a.name for a in node.names if a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    return {
        f"{modules[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
    }


def _imports(path: Path) -> set[str]:
    return {
        n.removeprefix("shardvec.") if n.split(".")[1:2] in (["tasks"], ["flows"], ["config"]) else n
        for n in _raw_imports(path, members=True)
    }


def _own_modules() -> dict[str, set[str]]:
    mods = {_module(p): _imports(p) for p in _files()}
    return {m: {i for i in imps if i in mods} for m, imps in mods.items()} | {"_all": set().union(*mods.values())}


def test_every_task_module_lives_in_a_package_of_the_graph():
    loose = [
        str(p.relative_to(ROOT))
        for p in _files(("tasks",))
        if _module(p) != "tasks" and _package(_module(p)) not in MAY_IMPORT
    ]
    assert loose == [], f"move these into a package of MAY_IMPORT in tests/integration/test_layers.py: {loose}"


def test_imports_follow_the_graph():
    wrong = []
    for mod, deps in _own_modules().items():
        here = _package(mod)
        if here is None:
            continue
        wrong += [
            f"{mod} imports {d}"
            for d in deps
            if d.startswith("flows") or (_package(d) not in (None, here) and _package(d) not in MAY_IMPORT[here])
        ]
    assert wrong == []


def test_each_package_says_what_it_owns_and_exports_what_others_use():
    """Its __init__ has a docstring and an __all__ holding every name another package imports
    from it or reads through one of its modules (that is its public interface)."""
    import importlib

    used: dict[str, set[str]] = {}
    for path in _files(FOLDERS + ("tests", "benchmarks")):
        here = _package(_module(path)) if path.is_relative_to(ROOT / "tasks") else None
        # names read through a module count in the code that ships (tests and benchmarks reach into
        # modules to patch or time their insides)
        shipped = any(path.is_relative_to(ROOT / folder) for folder in FOLDERS)
        for name in _raw_imports(path, members=True) | (_module_attributes(path) if shipped else set()):
            parts = name.split(".")
            if parts[:2] == ["shardvec", "tasks"] and len(parts) == 5 and ".".join(parts[1:3]) != here:
                if not parts[4].startswith("_"):
                    used.setdefault(".".join(parts[:3]), set()).add(parts[4])
    missing = []
    for package in MAY_IMPORT:
        mod = importlib.import_module(f"shardvec.{package}")
        assert (mod.__doc__ or "").strip(), f"{package}/__init__.py needs a docstring saying what it owns"
        missing += [f"{package}: {n}" for n in sorted(used.get(f"shardvec.{package}", set()) - set(mod.__all__))]
    assert missing == [], f"export these in the package's __all__: {missing}"


def test_no_module_imports_another_ones_private_names():
    """A name another module needs is part of its public interface (tasks/search/topk.py's kernel)."""
    private = [
        f"{_module(p)}: {n}"
        for p in _files()
        for n in _raw_imports(p, members=True)
        if n.startswith("shardvec.") and n.rsplit(".", 1)[1].startswith("_") and not n.endswith("__")
    ]
    assert private == []


def test_no_import_cycles():
    graph = {m: d for m, d in _own_modules().items() if m != "_all"}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph.get(m, ()):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_only_the_pipeline_imports_prefect_and_dask_and_readers_not_gensim():
    bad = []
    for path in _files(("tasks", "shardvec", "config")):
        mod = _module(path)
        if mod in ("shardvec.cli", "shardvec.alerts", "shardvec.server"):  # operating commands
            continue
        for imp in _imports(path):
            # the settings check [dask] memory_limit with the parser Dask itself will use (no
            # scheduler, client or worker code: dask.utils imports none)
            if mod == "config.settings" and imp.startswith("dask.utils"):
                continue
            if imp.split(".")[0] in ORCHESTRATION:
                bad.append(f"{mod} imports {imp}")
            if mod in READER and imp.startswith("gensim"):
                bad.append(f"{mod} (a reader) imports {imp}")
    assert bad == []


def test_nothing_imports_the_folders_by_their_bare_names():
    """They install as shardvec.tasks etc.: a bare `import tasks` works in the checkout only."""
    bare = [
        f"{_module(p)}: {n}"
        for p in _files(FOLDERS + ("tests", "benchmarks"))
        for n in _raw_imports(p)
        if n.split(".")[0] in ("tasks", "flows", "config")
    ]
    assert bare == []


def test_nothing_is_configured_at_import_and_the_flow_process_loads_no_gensim():
    """Importing the flows (a deployment's entrypoint) and the CLI reads no settings and changes
    no global configuration: a broken configuration fails the run that reads it, not the import.
    Nor does it import gensim: the flow process wires tasks and never trains, and gensim with
    scipy.stats is ~0.9 s of CPU at the start of every run (the task modules import it where
    they use it)."""
    import os
    import subprocess
    import sys

    code = (
        "import os, dask; before = dict(os.environ)\n"
        "import shardvec.cli, shardvec.flows.nightly, shardvec.flows.backfill, shardvec.flows.serve\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "assert dask.config.get('distributed.worker.profile.enabled') is True\n"
        "import sys; assert 'gensim' not in sys.modules, 'a module the flows import imports gensim at its top'"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "SHARDVEC_LSI_NUM_TOPICS": "0"}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_the_wheel_installs_only_the_shardvec_namespace(tmp_path):
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("shardvec-*.whl"))
    top = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"shardvec"}
    names = zipfile.ZipFile(wheel).namelist()
    ours = {
        f"shardvec/{p.relative_to(ROOT)}" if not p.is_relative_to(ROOT / "shardvec") else str(p.relative_to(ROOT))
        for p in _files()
    }
    assert ours - set(names) == set(), "list the missing packages in pyproject.toml's [tool.setuptools] packages"
    assert "shardvec/config/default.toml" in names
    site = tmp_path / "site"  # installed alone; its dependencies come from this environment
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import shardvec.tasks.storage.ledger as l, shardvec.config as c; "
            "print(l.__file__); print(c.load_settings().lsi.num_topics)",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    where, topics = out.stdout.split()
    assert where.startswith(str(site)) and topics.isdigit()
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "shardvec"]


def test_the_reader_api_reaches_no_training_code():
    graph = {m: d for m, d in _own_modules().items() if m != "_all"}
    seen, todo = set(), ["shardvec.reader"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, [])
    assert not {m for m in seen if m.startswith(("tasks.models", "tasks.quality"))}, seen
    assert not any(m.startswith("flows") for m in seen), seen


def test_every_error_for_users_is_a_shardvec_error():
    """The CLI turns ShardvecError, and only it, into one line (`error: ...`): an error class
    of ours outside it would reach the user as a traceback."""
    import importlib
    import inspect

    from shardvec.errors import ShardvecError

    outside = []
    for path in _files():
        tree = ast.parse(path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]
        if names:
            module = _module(path)
            mod = importlib.import_module(module if module.startswith("shardvec") else f"shardvec.{module}")
            outside += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if inspect.isclass(getattr(mod, n)) and not issubclass(getattr(mod, n), ShardvecError)
            ]
    assert outside == [], f"make these subclass ShardvecError (shardvec/errors.py): {outside}"


LONG = 350  # lines: a module longer says why in its docstring


def test_every_module_says_its_role_and_a_long_one_why_it_is_long():
    """A module's docstring says what it holds; one over LONG lines also says, in a paragraph
    starting "Long because:", why it is one module and not several."""
    import ast

    wrong = []
    for path in _files():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not doc.strip() and path.name != "__init__.py":
            wrong.append(f"{path.relative_to(ROOT)}: no docstring")
        elif text.count("\n") > LONG and "Long because:" not in doc:
            wrong.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines, no 'Long because:' in its docstring")
    assert wrong == []
