"""Shared fixtures: compose the real configs (conf/) with overrides, tiny data in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segexp.config.compose import compose
from bench.mlflow_server import MlflowServer, free_port  # noqa: F401  (tests import them from here)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]

TINY = [  # smallest model and run that still exercise every code path
    "debug=smoke", "trainer.verbose=0", "trainer.crop_size=32", "trainer.steps_per_epoch=2",
    # logging the model to MLflow writes and uploads a SavedModel: seconds per run. Tests of what a run logs
    # ask for it with tracking.log_model=true.
    "tracking.log_model=false",
]
# the cheapest U-Net to trace (bench.training.TINY_MODEL's), for tests of what happens around a model: every
# training traces its model, and a deeper one costs seconds each time
SHALLOW = ["model.depth=1", "model.batch_norm=false"]


def compose_config(config_name: str, *overrides: str):
    """Returns conf/<config_name>.yaml composed with overrides, as the CLI would build it."""
    return compose(config_name, overrides)


@pytest.fixture(autouse=True, scope="session")
def no_store_of_the_caller():
    """The caller's MLFLOW_TRACKING_URI names their own store (on a developer's machine, a real one): no test, and
    no process a test starts, may log there, whether or not the test thought of it."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def make_cfg():
    """Returns compose(overrides) -> DictConfig of conf/train.yaml."""
    return lambda *overrides: compose_config("train", *overrides)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A new sqlite MLflow store with its full schema, built once per worker by segexp as any run builds one.
    MLflow's sixty-odd migrations take seconds per store, so tests that are not about creating a store start
    from a copy (the creation itself is under test in test_reliability, test_sweep and the CLI tests)."""
    from segexp.tracking.store import create_sqlite_store

    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    create_sqlite_store(path)
    return path


def copy_store(template: Path, path: Path) -> str:
    """Copies the empty store to path (a new file); returns its sqlite URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def default_store(tmp_path, empty_store) -> str:
    """Puts a copy of the empty store where a command run from tmp_path keeps its runs by default
    (outputs/mlflow.db), as after a user's first run there; returns its URI. For tests of what a command does
    with a store, not of how it creates one."""
    return copy_store(empty_store, tmp_path / "outputs" / "mlflow.db")


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    """Returns a fresh sqlite MLflow URI in tmp_path and runs the test from tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy_store(empty_store, tmp_path / "mlflow.db")


def cli_errors(cwd, cases: list[list[str]]) -> list[tuple[int, str, bool]]:
    """Runs `segexp <case>` for each case in one fresh Python process (as a user would, one after another);
    returns each case's (exit code, stderr, whether TensorFlow was loaded by then)."""
    code = ("import contextlib, io, json, sys\nfrom segexp.__main__ import main\nout = []\n"
            f"for case in {cases!r}:\n"
            "    err = io.StringIO()\n"
            "    try:\n        with contextlib.redirect_stderr(err):\n            main(case)\n        code = 0\n"
            "    except SystemExit as exit:\n        code = exit.code\n"
            "    out.append([code, err.getvalue(), 'tensorflow' in sys.modules])\n"
            "print('RESULT', json.dumps(out))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, run.stderr[-3000:]
    return [tuple(pair) for pair in json.loads(line[0].removeprefix("RESULT "))]


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_blob_pairs(root: Path, sizes, rgb: bool = False, suffix: str = ".png"):
    """Writes image/mask pairs (bright rectangles on dark) of the given (h, w) sizes; returns the two dirs."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), np.uint8)
        mask[rng.integers(0, h // 2):, rng.integers(0, w // 2):] = 255
        image = np.where(mask == 255, 200, 40).astype(np.uint8) + rng.integers(0, 20, mask.shape, dtype=np.uint8)
        if rgb:
            image = np.stack([image, image // 2, 255 - image], axis=-1)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"s{i}{suffix}")
        write_png(root / "masks" / f"s{i}.png", mask)
    return root / "images", root / "masks"


@pytest.fixture
def folder_data(tmp_path):
    """Returns (images dir, masks dir) holding 6 gray 40x52 pairs of blobs and their masks."""
    return write_blob_pairs(tmp_path, [(40, 52)] * 6)


@pytest.fixture
def mlflow_server(tmp_path, empty_store):
    """Returns a started MlflowServer in tmp_path/server (over a copy of the empty store), killed when the
    test ends."""
    copy_store(empty_store, tmp_path / "server" / "mlflow.db")
    server = MlflowServer(tmp_path / "server").start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With SEGEXP_CPU_LOG set (bench.suite sets it), appends each test's CPU seconds - this worker's and those of
    the processes it started and waited for - as a JSON line: on a machine the suite keeps fully busy, wall time
    per test says more about its neighbours than about the test."""
    log = os.environ.get("SEGEXP_CPU_LOG")
    if not log:
        yield
        return
    import json
    import resource
    import time

    def cpu(who) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    before, children, started = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.monotonic()
    yield
    record = {"test": item.nodeid, "self_s": cpu(resource.RUSAGE_SELF) - before,
              "children_s": cpu(resource.RUSAGE_CHILDREN) - children, "wall_s": time.monotonic() - started,
              "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "ended": time.time()}
    with open(log, "a") as out:  # one short line per write: appends from the workers do not interleave
        out.write(json.dumps(record) + "\n")


def pytest_collection_modifyitems(config, items):
    """Modules with slow tests (training, subprocesses) first, the quick modules after them, each module's tests
    together and in their order: xdist hands tests out in this order, so the minute-long ones start early and the
    quick ones fill the workers' ends, rather than a sweep test starting when the others are nearly done (one worker
    ran on 105 s after another had finished, 2026-12-06). Kept together, a module's fixtures are built once."""
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_modules)  # stable: the order within each part is kept


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (addopts): one worker more than the cores. Much of the suite waits - on subprocesses importing
    TensorFlow, MLflow servers starting, real outages - and a third worker fills those waits. On 2 cores
    (2026-12-06, one run each, same code): 13:49 with 2 workers, 10:26 with 3, 11:20 with 4; fresh clones with 3
    took 11:57 and 14:25 on the same day, so the spread between runs is as large as the gain."""
    return len(os.sched_getaffinity(0)) + 1
