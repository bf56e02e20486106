"""The package's shape, read from its imports (every import, also inside functions): layers only import
downwards, the import chains stay short, only tracking/ touches MLflow, and no module uses a command
as a library."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# bottom to top; a module may import its own layer and the layers below it
LAYERS = [("segexp.errors", "segexp.rundir", "segexp.native_logs", "segexp.reports"), ("segexp.config",), ("segexp.tracking",),
          ("segexp.data",), ("segexp.samples",), ("segexp.models",), ("segexp.inference",), ("segexp.postprocessing",), ("segexp.checks",),
          ("segexp.evaluation",), ("segexp.training",), ("segexp.experiments",), ("segexp.commands",), ("segexp.cli",),
          ("segexp.__main__",)]
# each package and its one job (docs/development.md shows the same table to people)
JOBS = {
    "cli": "command lines: each command's Hydra task, thin",
    "commands": "the bodies of predict, evaluate, export and cross-validation",
    "experiments": "sweeps, replicates, compare and reproduce: runs about runs",
    "training": "the composition root train(cfg) and what it builds and fits",
    "evaluation": "scores: metrics, scoring a checkpoint, which slices, the stage's choice, pictures",
    "postprocessing": "the segmentation stage: watersheds, graph partitioning, the parameter search",
    "inference": "a model over images: overlap tiles, TTA, the predictor, the bioimage.io package",
    "models": "the Keras U-Net, its losses and metrics, loading checkpoints",
    "samples": "the training samples: augmented crops with targets and weights, streamed to Keras",
    "data": "images, volumes and masks read and checked; classes, affinities, border weights, splits",
    "tracking": "MLflow behind typed run records, every tag name, the spool for outages",
    "config": "schemas, composition and the command line's preflight",
}
MAX_MODULES = 9  # a package larger than this does more than one job (issue 35)
LONGEST_CHAIN = 8  # modules, a package's __init__ counted as one, as issue 23 counts them


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((SRC / "segexp").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def imported_names(path: Path, module: str) -> set[str]:
    """Returns every dotted name a module imports (`from a.b import c` gives a.b and a.b.c), relative ones resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def edges() -> dict[str, set[str]]:
    """Returns {module: the segexp modules it imports}, each import named by the longest module it starts with."""
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name not in (module, "segexp"):
                targets.add(name)
        graph[module] = targets
    return graph


GRAPH = edges()


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of LAYERS: place it there")


def test_each_package_has_one_job_and_at_most_nine_modules():
    packages = {p.name: len([m for m in p.glob("*.py") if m.name != "__init__.py"])
                for p in (SRC / "segexp").iterdir() if (p / "__init__.py").exists()}
    assert set(packages) == set(JOBS), "name the job of every package in JOBS (and docs/development.md)"
    assert {name: n for name, n in packages.items() if n > MAX_MODULES} == {}


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    upward = [f"{module} -> {target}" for module, targets in GRAPH.items() if module != "segexp"
              for target in targets if layer_of(target) > layer_of(module)]
    assert upward == []


def test_the_longest_import_chain_between_segexps_modules_is_short():
    @lru_cache(None)
    def longest(module: str, seen: frozenset = frozenset()) -> tuple[str, ...]:
        chains = [longest(n, seen | {module}) for n in GRAPH[module] if n not in seen]
        return (module, *max(chains, key=len, default=()))

    chain = max((longest(m) for m in GRAPH), key=len)
    assert len(chain) <= LONGEST_CHAIN, " -> ".join(chain)
    assert len(chain) >= 5  # the walk follows real imports: __main__ reaches a leaf through several layers


def outside_tracking() -> dict[str, Path]:
    """Returns {name: path} of every module of src, bench and studies but segexp.tracking's."""
    repo = SRC.parent
    others = {f"{path.parent.name}.{path.stem}": path for path in [*repo.glob("bench/*.py"), *repo.glob("studies/*.py")]}
    return {**{m: p for m, p in MODULES.items() if not m.startswith("segexp.tracking")}, **others}


def test_only_tracking_imports_mlflow():
    importers = sorted(m for m, path in MODULES.items()
                       if any(n.split(".")[0] == "mlflow" for n in imported_names(path, m)))
    assert importers and all(m.startswith("segexp.tracking.") for m in importers), importers
    elsewhere = sorted(m for m, path in outside_tracking().items()
                       if any(n.split(".")[0] == "mlflow" for n in imported_names(path, m)))
    assert elsewhere == []


def test_nothing_outside_tracking_reads_mlflows_run_objects():
    """A run crosses tracking's boundary as a RunRecord: no `.data.tags`, `.data.metrics`, `.data.params` or
    `.search_runs` outside segexp.tracking (src, bench, studies)."""
    def raw_reads(path: Path) -> list[str]:
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (node.attr == "search_runs" or (
                    node.attr in ("tags", "metrics", "params") and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "data")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        return found

    assert [read for path in outside_tracking().values() for read in raw_reads(path)] == []
    assert raw_reads(SRC / "segexp" / "tracking" / "store.py")  # the check sees them where they are


def test_no_module_imports_a_command_but_the_dispatcher():
    commands = {m for m in MODULES if m.startswith("segexp.cli.")}
    assert {"segexp.cli.train", "segexp.cli.predict", "segexp.cli.evaluate", "segexp.cli.compare"} <= commands
    users = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets & commands
                   if module != "segexp.__main__")
    assert users == []
    assert commands - {"segexp.cli"} <= GRAPH["segexp.__main__"]  # and the dispatcher reaches every one


def test_command_bodies_are_used_by_their_command_only():
    """segexp.commands holds the bodies of predict, evaluate and export: only the cli module of the same command
    runs one (what two commands share lives in the layers below), and no study or benchmark imports one - they
    run the command, or the library it calls."""
    bodies = {m for m in MODULES if m.startswith("segexp.commands.")}
    assert {"segexp.commands.predict", "segexp.commands.evaluate", "segexp.commands.export"} <= bodies
    users = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets & bodies
                   if not module.startswith("segexp.cli.") and not module.startswith("segexp.commands."))
    repo = SRC.parent
    users += sorted(f"{path.relative_to(repo)} -> {name}" for path in [*repo.glob("bench/*.py"), *repo.glob("studies/*.py")]
                    for name in imported_names(path, "x") if name.startswith("segexp.commands"))
    assert users == []


def test_bench_studies_and_tests_import_segexps_modules_not_names_that_moved():
    repo = SRC.parent
    unknown = []
    for path in [*repo.glob("bench/*.py"), *repo.glob("studies/*.py"), *repo.glob("tests/*.py")]:
        for name in imported_names(path, "x"):
            if name.startswith("segexp.") and name not in MODULES and name.rpartition(".")[0] not in MODULES:
                unknown.append(f"{path.relative_to(repo)}: {name}")
    assert unknown == []
