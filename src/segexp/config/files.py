"""Where segexp's code and configs are: the conf/ directory and its groups (no Hydra, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/segexp, or site-packages/segexp in a wheel


def config_dir() -> Path:
    """Returns the conf/ directory: inside the installed package, else the checkout's."""
    packaged = PACKAGE_DIR / "conf"  # a wheel carries conf/ inside the package
    return packaged if packaged.is_dir() else PACKAGE_DIR.parents[1] / "conf"


def config_groups() -> dict[str, list[str]]:
    """Returns {group: [options]} read from the YAML files (nested groups as "optimizer/schedule")."""
    root = config_dir()
    groups: dict[str, list[str]] = {}
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        options = sorted(p.stem for p in directory.glob("*.yaml"))
        if options:
            groups[directory.relative_to(root).as_posix()] = options
    return groups
