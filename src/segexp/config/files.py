"""Where segexp's code and configs are: the conf/ directory and its groups (no Hydra, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/segexp, or site-packages/segexp in a wheel


def config_dir() -> Path:
    """Returns the conf/ directory: inside the installed package, else the checkout's."""
    packaged = PACKAGE_DIR / "conf"  # a wheel carries conf/ inside the package
    return packaged if packaged.is_dir() else PACKAGE_DIR.parents[1] / "conf"


def config_dirs(extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """Returns segexp's conf/ and the directories `--config-dir` adds."""
    return [config_dir(), *(Path(d) for d in extra_dirs)]


def config_groups(extra_dirs: Sequence[Path] = ()) -> dict[str, list[str]]:
    """Returns {group: [options]} read from the YAML files (nested groups as "optimizer/schedule"), with the
    options of `extra_dirs` (`--config-dir`) too."""
    groups: dict[str, set[str]] = {}
    for root in config_dirs(extra_dirs):
        for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
            options = {p.stem for p in directory.glob("*.yaml")}
            if options:
                groups.setdefault(directory.relative_to(root).as_posix(), set()).update(options)
    return {group: sorted(options) for group, options in sorted(groups.items())}
