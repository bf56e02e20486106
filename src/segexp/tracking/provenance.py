"""Where a run comes from: code version, package versions, machine, and the config as flat params
(no mlflow here; the trackers log what this returns)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping

from segexp.config.files import PACKAGE_DIR, config_dir
from segexp.tracking.tags import (
    CODE_DIGEST,
    GIT_COMMIT,
    GIT_DIRTY,
    HOSTNAME,
    OVERRIDES,
    SEGEXP_VERSION,
    version_tag,
)


def git_state(directory: Path) -> dict[str, str]:
    """Returns {git_commit, git_dirty} tags of the checkout holding `directory`, or {} outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {GIT_COMMIT: git("rev-parse", "HEAD"),
                GIT_DIRTY: str(bool(git("status", "--porcelain", "--untracked-files=no")))}
    except (OSError, subprocess.SubprocessError):
        return {}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Returns {"a.b.c": value} for nested dicts and lists (list items keyed by index)."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


CODE_FILES = ("*.py", "*.yaml")


def code_digest(*roots: Path) -> str:
    """Returns a sha256 over the package's source and config files (relative path and content): the code a
    run was made with, recognised with or without git and with uncommitted changes."""
    import hashlib

    digest = hashlib.sha256()
    for root in roots:
        if not root.is_dir():
            continue
        files = sorted(f for pattern in CODE_FILES for f in root.rglob(pattern) if "__pycache__" not in f.parts)
        for file in files:
            digest.update(f"{root.name}/{file.relative_to(root).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def tf_version() -> str:
    """Returns the installed TensorFlow distribution's version (cpu or gpu wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return version(dist)
    return "unknown"


def run_tags(overrides: list[str], code_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Returns the provenance tags every run carries: code, versions, machine."""
    from importlib.metadata import PackageNotFoundError, version

    from segexp import __version__

    versions = {}
    for dist in ("keras", "mlflow", "albumentations", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[version_tag(dist)] = version(dist)
    return {
        SEGEXP_VERSION: __version__,
        OVERRIDES: " ".join(overrides) or "(none)",
        HOSTNAME: socket.gethostname(),
        version_tag("tensorflow"): tf_version(),
        **versions,
        **git_state(code_dir),
        CODE_DIGEST: code_digest(code_dir, config_dir()),
    }
