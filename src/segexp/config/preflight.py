"""The pre-flight check: every mistake Hydra or the schemas catch - an unknown option, a wrong enum
value or type, a misspelled key, an out-of-range value - becomes one line naming the key and what is
allowed, before any model or data is touched (no TensorFlow here)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from segexp.config.compose import compose
from segexp.errors import ConfigError

_ABSENT = object()  # OmegaConf.select's default: a key no config sets


def one_line(err: BaseException, command: str = "train") -> str:
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
        return f"{where}{key}: {first}; `segexp {command} --cfg job` shows the composed config"
    return where + first


def check_syntax(overrides: Sequence[str]) -> None:
    """Raises ConfigError naming the first override Hydra's grammar cannot read (`model.depth=[`,
    `a=["x y"]` unquoted by the shell), before anything composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{override}: not an override Hydra can read ({reason}); quote a value with spaces, "
                              "brackets or commas for the shell, e.g. 'key=[\"a b\",c]'") from None


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
              extra_dirs: Sequence[Path] = (), check: Callable[[Any], None] | None = None) -> Any:
    """Composes the command's config with its overrides (each sweep value once) and hands each variant to
    `check` (segexp.checks.check_config of the command: the checks above config/ come from its caller);
    raises ConfigError with one line on the first mistake, also for an unwritable output directory.
    Returns the composed config of the first variant."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    first = None
    check_syntax(overrides)
    try:
        variants = sweep_variants(overrides) if multirun else [list(overrides)]
    except HydraException as err:  # a sweep Hydra cannot expand
        raise ConfigError(one_line(err)) from None
    for variant in variants:
        try:
            cfg = compose(config_name, variant, extra_dirs, with_hydra=True)
        except (HydraException, OmegaConfBaseException) as err:
            hint = unselected_option_hint(config_name, variant, extra_dirs)
            raise ConfigError(hint or one_line(err, config_name)) from None
        except ValueError as err:  # Hydra's defaults list given a number as an option: `postprocess=0`
            raise ConfigError(group_value_override(variant, extra_dirs) or str(err)) from None
        check_config_nodes(config_name, variant, extra_dirs)
        if check is not None:
            check(cfg)
        first = first if first is not None else cfg
    check_writable(output_root(first, multirun))
    return first


def group_value_override(overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> str | None:
    """Returns one line for the first override of a config group whose value is a number, not an option's name,
    or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from segexp.config.files import config_groups

    groups = config_groups(extra_dirs)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        value = override.value()
        if override.get_key_element().lstrip("+~") in groups and isinstance(value, (int, float, bool)):
            group = override.get_key_element().lstrip("+~")
            return f"{override.input_line}: choose an option of {group} by name: {', '.join(groups[group])}"
    return None


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


def value_overrides(overrides: Sequence[str]) -> list[tuple[str, str, Any]]:
    """Returns (override as typed, dotted key, value) of the overrides that set a key (`a.b=1`, `++a.b=1`)
    rather than choose a group option (`model=unet`, `optimizer/schedule=cosine`) or delete (`~a`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    found = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if override.type == OverrideType.DEL or "." not in key or "/" in key or key.startswith("hydra"):
            continue
        found.append((override.input_line, key.lstrip("+"), override.value()))
    return found


def group_of(key: str, groups: dict[str, list[str]]) -> tuple[str, str] | None:
    """Returns (the config group a dotted key lies in, the rest of the key), the deepest group first:
    optimizer.schedule.lr -> ("optimizer/schedule", "lr"); None outside every group."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        group = "/".join(parts[:cut])
        if group in groups:
            return group, ".".join(parts[cut:])
    return None


def option_values(group: str, rest: str, extra_dirs: Sequence[Path] = ()) -> list[tuple[str, Any]]:
    """Returns (option, the value its YAML file gives the dotted key `rest`) for each option of a config
    group whose file sets that key; read from the files alone, without composing."""
    from omegaconf import OmegaConf

    from segexp.config.files import config_dirs

    files = [(path.stem, path) for root in config_dirs(extra_dirs) for path in sorted((root / group).glob("*.yaml"))]
    # unresolved: a default like trainer.monitor is an interpolation that only the composed config can resolve
    found = [(option, OmegaConf.select(OmegaConf.load(path), rest, default=_ABSENT, throw_on_resolution_failure=False))
             for option, path in files]
    return [(option, value) for option, value in found if value is not _ABSENT]


def check_config_nodes(config_name: str, overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> None:
    """Raises ConfigError when an override gives a plain value where the config holds a node that must be
    a config - a group's option (`optimizer.schedule=cosine` for `optimizer/schedule=cosine`) or a
    `_target_` node (`optimizer.fn=adam`): Hydra composes it, and it fails only when instantiated.
    Composes again (without those overrides) only when an option file holds a node at one of their keys."""
    from omegaconf import DictConfig, OmegaConf

    from segexp.config.files import config_groups

    groups = config_groups(extra_dirs)
    given = []
    for line, key, value in value_overrides(overrides):
        if value is None or isinstance(value, (dict, list)):
            continue
        as_group = key.replace(".", "/")
        if as_group in groups:
            raise ConfigError(f"{line}: {as_group} is a config group; write {as_group}={value} "
                              f"(options: {', '.join(groups[as_group])})")
        owner = group_of(key, groups)
        if owner and any(isinstance(v, DictConfig) for _, v in option_values(*owner, extra_dirs)):
            given.append((line, key, owner[0]))
    if not given:
        return
    lines = {line for line, _, _ in given}
    structure = compose(config_name, [o for o in overrides if o not in lines], extra_dirs)
    for line, key, group in given:
        node = OmegaConf.select(structure, key, throw_on_missing=False)
        if not isinstance(node, DictConfig):
            continue
        target = node.get("_target_")
        what = f"a `_target_` node ({target})" if target else "a config node"
        example = next((k for k in node if k != "_target_"), None)
        keys = f"set one of its keys, e.g. {key}.{example}=..." if example else "set its keys"
        raise ConfigError(f"{line}: {key} is {what}, not a value; choose another option of its group, "
                          f"{group}=OPTION (options: {', '.join(groups[group])}), or {keys}")


def unselected_option_hint(config_name: str, overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> str | None:
    """Returns one line for an override of a key that only a group option not selected holds
    (`callbacks.early_stop.patience=3` without `callbacks=early_stop`), or None."""
    from omegaconf import OmegaConf

    from segexp.config.files import config_groups

    groups = config_groups(extra_dirs)
    for line, key, _ in value_overrides(overrides):
        owner = group_of(key, groups)
        if owner is None or not owner[1]:
            continue
        group = owner[0]
        holders = [option for option, _ in option_values(*owner, extra_dirs)]
        if not holders:
            continue
        try:
            structure = compose(config_name, [o for o in overrides if o != line], extra_dirs)
        except Exception:  # noqa: BLE001 - another override is wrong too: leave the message to Hydra's
            return None
        if OmegaConf.select(structure, key, default=_ABSENT) is not _ABSENT:
            continue  # the selected option has the key: the value is what is wrong
        choices = " or ".join(f"{group}={option}" for option in dict.fromkeys(holders))
        return f"{line}: {key} belongs to {choices}, which is not selected; add {choices.split(' or ')[0]} to set it"
    return None
