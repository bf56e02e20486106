"""The pre-flight check: every mistake Hydra or the schemas catch - an unknown option, a wrong enum
value or type, a misspelled key, an out-of-range value - becomes one line naming the key and what is
allowed, before any model or data is touched (no TensorFlow here)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from segexp.config.compose import compose
from segexp.errors import ConfigError


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

    from segexp.config.schema import validate

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


def require_values(command: str, cfg, usage: str) -> None:
    """Raises ConfigError naming the command's required values (`???` in its config) left unset; `usage`
    says what the command takes."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def missing(node, prefix: str = ""):  # walks the nodes without resolving interpolations (${hydra:...})
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            path = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
            child = node._get_node(key)
            if OmegaConf.is_missing(node, key):
                yield path
            elif isinstance(child, (DictConfig, ListConfig)) and not child._is_none() and not child._is_interpolation():
                yield from missing(child, f"{path}.")

    missing = sorted(m for m in missing(cfg) if not m.startswith("hydra."))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required; segexp {command}: {usage}")
