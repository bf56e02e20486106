"""Composing the configs in conf/ as the CLI would, for tests, benchmarks and the pre-flight check
(no TensorFlow here)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from segexp.config.files import config_dir
from segexp.config.schema import register_configs


def compose(config_name: str, overrides: Sequence[str] = (), extra_dirs: Sequence[Path] = (),
            with_hydra: bool = False):
    """Returns conf/<config_name>.yaml composed with `overrides` as the CLI would (Hydra's own errors
    propagate); `extra_dirs` are searched too, as `--config-dir` would add them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    searchpath = [f"hydra.searchpath=[{','.join(f'file://{Path(d).resolve()}' for d in extra_dirs)}]"] \
        if extra_dirs else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*searchpath, *overrides],
                             return_hydra_config=with_hydra)
