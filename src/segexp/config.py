"""Composing and instantiating the configs in conf/ (no TensorFlow here).

`compose` builds a config as the CLI would, for tests, benchmarks and the CLI's own pre-flight
check; `preflight` turns every mistake Hydra or the schemas catch - an unknown option, a wrong
enum value or type, a misspelled key, an out-of-range value - into one line naming the key and
what is allowed, before any model or data is touched; `instantiate` is Hydra's, with segexp's own
errors surfacing as themselves.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from segexp.errors import ConfigError, SegexpError


def config_dir() -> Path:
    """Returns the conf/ directory: inside the installed package, else the checkout's."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> dict[str, list[str]]:
    """Returns {group: [options]} read from the YAML files (nested groups as "optimizer/schedule")."""
    root = config_dir()
    groups: dict[str, list[str]] = {}
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        options = sorted(p.stem for p in directory.glob("*.yaml"))
        if options:
            groups[directory.relative_to(root).as_posix()] = options
    return groups


def compose(config_name: str, overrides: Sequence[str] = (), extra_dirs: Sequence[Path] = (),
            with_hydra: bool = False):
    """Returns conf/<config_name>.yaml composed with `overrides` as the CLI would (Hydra's own errors
    propagate); `extra_dirs` are searched too, as `--config-dir` would add them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from segexp.schema import register_configs

    register_configs()
    searchpath = [f"hydra.searchpath=[{','.join(f'file://{Path(d).resolve()}' for d in extra_dirs)}]"] \
        if extra_dirs else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*searchpath, *overrides],
                             return_hydra_config=with_hydra)


def instantiate(config, **kwargs):
    """hydra.utils.instantiate, but a SegexpError raised by the target surfaces as itself, not wrapped."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, SegexpError):
            raise err.__cause__ from None
        raise


def one_line(err: BaseException) -> str:
    """Returns a composition error as one line: the key or group, and what is allowed."""
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^']+)'.*?Available options in '[^']+':\n((?:\t[^\n]*\n?)*)",
                        text, re.S)
    if missing:
        group, option, listed = missing.groups()
        options = ", ".join(o for o in listed.split() if not o.endswith("_schema"))  # ConfigStore schemas
        return f"{group}={option}: no such option; choose one of {options}"
    cause = err.__cause__ or err
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    origin = re.match(r"In '([^']+)': \w+ raised while composing config:", lines[0]) if lines else None
    key = getattr(cause, "full_key", None) or next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    detail = [line for line in lines[1 if origin else 0:]
              if not line.startswith(("full_key:", "object_type", "reference_type"))]
    first = str(getattr(cause, "msg", None) or (detail[0] if detail else "invalid config")).splitlines()[0]
    first = re.sub(r"expected one of \[(.*)\]", lambda m: "choose one of " + m.group(1), first)
    where = f"{origin.group(1)}.yaml: " if origin else ""
    if key:
        return f"{where}{key}: {first}; `segexp train --cfg job` shows the composed config"
    return where + first


def sweep_variants(overrides: Sequence[str]) -> list[list[str]]:
    """Returns override lists that together try every value of every sweep (a=1,2 b=x,y gives
    [a=1 b=x], [a=2 b=x], [a=1 b=y]): each value is composed once, not every combination. A sweep
    whose values a sweeper draws (interval, glob) is left to the sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}
    choices = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            choices.append([override.input_line])
            continue
        key = prefix.get(override.type, "") + override.get_key_element()
        try:
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        except Exception:  # noqa: BLE001 - interval() and glob() have no list of values to compose
            continue
    base = [values[0] for values in choices]
    return [base] + [[*base[:i], value, *base[i + 1:]] for i, values in enumerate(choices) for value in values[1:]]


def preflight(config_name: str, overrides: Sequence[str], multirun: bool,
              extra_dirs: Sequence[Path] = ()) -> Any:
    """Composes the command's config with its overrides (each sweep value once) and validates it;
    raises ConfigError with one line on the first mistake, also for an unwritable output directory.
    Returns the composed config of the first variant."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from segexp.schema import validate

    first = None
    try:
        variants = sweep_variants(overrides) if multirun else [list(overrides)]
    except HydraException as err:  # an override Hydra cannot parse
        raise ConfigError(one_line(err)) from None
    for variant in variants:
        try:
            cfg = compose(config_name, variant, extra_dirs, with_hydra=True)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(one_line(err)) from None
        if config_name == "train":
            validate(cfg)
        first = first if first is not None else cfg
    check_writable(output_root(first, multirun))
    return first


def output_root(cfg, multirun: bool) -> Path:
    """Returns the part of the run (or sweep) directory that exists before Hydra resolves ${now:...}."""
    from omegaconf import OmegaConf

    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = OmegaConf.to_container(node, resolve=False)["dir"]
    return Path(str(raw).split("${")[0] or ".")


def check_writable(directory: Path) -> None:
    """Raises ConfigError if directory cannot be created and written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return
    except OSError as err:
        raise ConfigError(f"{directory}: output directory not writable ({err.strerror}); run from a writable "
                          "directory or set hydra.run.dir=... (hydra.sweep.dir=... for -m)") from None
