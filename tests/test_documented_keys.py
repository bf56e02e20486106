"""Every key the README and docs/*.md tell users to set, sent through the command line's preflight in this process
(no Hydra job, no TensorFlow): a documented value composes, an invalid one ends in one line naming the key.

The keys are read from the pages' code (backtick spans and fenced blocks), so a key added to the docs is tested
without anyone listing it here. A documented value is valid unless it is a placeholder (`<run>`, DIR, ...); an
invalid value is chosen from the key's type in the composed config (a word for a number or a switch, a list for
text, an unknown option for a group). Keys whose every value composes are named in FREE with the reason.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence, Union, get_args, get_origin

import pytest

from segexp.__main__ import check_command_line, main
from segexp.errors import ConfigError


class Line(NamedTuple):
    overrides: tuple[str, ...]
    multirun: bool

ROOT = Path(__file__).resolve().parents[1]
# results.md holds generated study commands and tables, not instructions
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "results.md")]
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`|^(?: {4}|\t)(.+)$", re.S | re.M)
# a value: a bracketed list (spaces and quotes allowed inside), else up to a blank, quote, pipe or backtick
OVERRIDE = re.compile(r"(?<![\w./$<-])([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)=(\[[^\]\n`]*\]|[^\s`|'\"]*)")
COMMAND = re.compile(r"segexp\s+(train|predict|evaluate|compare|reproduce|orphans|upload|export)\b")
PLACEHOLDER = re.compile(r"<|\.\.\.|\*|^[a-z]$|^[A-Z_]+$|^[A-Z_]+[/.]|^$|[:]$|\$")
COMMANDS = ("train", "evaluate", "predict", "export", "compare", "reproduce", "upload", "orphans")
# what each command needs before anything else composes (require_values); no file behind them is read here
REQUIRED = {"train": [], "predict": ["ckpt=run", "input=in", "output=out"], "evaluate": ["ckpt=run"],
            "export": ["ckpt=run", "output=out"],
            "compare": ["runs=[a,b]"], "reproduce": ["run=r"], "upload": ["run=r"], "orphans": []}
# `a=b` in the pages' code that is no config key: an MLflow tag, a sentence's example
NOT_KEYS = {"reproduces", "key", "group", "n", "w0"}
# keys for which no value is wrong before the command runs, and why
FREE = {
    "data.classes": "a list of names or {name, value} entries: checked against the masks when they are read",
    "data.ignore": "a pixel value or a list of RGB values, checked against the masks when they are read",
    "inference.resize": "null or [h, w]: checked against the checkpoint's data when it loads",
    "slices": "positions or names of slices, checked against the data when it is read",
    "split.select": "positions of slices, checked against the data when it is read (DataError)",
    "split.report": "positions of slices, checked against the data when it is read (DataError)",
    "variants": "metric suffixes: checked against the runs' metrics when compare reads them",
    "metrics": "metric names: checked against the runs' metrics when compare reads them",
    "loss.fn.dice_classes": "class names, checked against data.classes by checks.check_training_data",
    # a `_target_` node's arguments are the class's own: Keras or Optuna checks them when the run builds it
    "callbacks.early_stop.patience": "an argument of keras.callbacks.EarlyStopping, checked when it is built",
    "pruner": "an optuna.pruners node or null, checked when the sweeper builds it",
}


@lru_cache(None)
def base(command: str):
    from segexp.config.compose import compose

    return compose(command, REQUIRED[command])


@lru_cache(None)
def groups() -> dict[str, list[str]]:
    from segexp.config.files import config_groups

    return config_groups()


def holds(command: str, key: str) -> bool:
    """True when the command's config has the key's first part (a group's keys may need its option selected);
    the groups that set global keys (experiment, debug, hparams_search) are train's."""
    first = key.split(".")[0]
    return first in base(command).keys() or (command == "train" and key.replace(".", "/") in groups())


def documented() -> tuple[dict[tuple[str, str], list[Line]], dict[tuple[Path, str], list[Line]]]:
    """Returns ({(command, key): the lines of code that set it}, {(page, command): its lines}) from the pages:
    a line's command is the one it names, else the first command whose config holds its first key. A
    placeholder value (DIR, <run>) becomes 0 ([] for a list), so the keys beside it still compose."""
    by_key: dict[tuple[str, str], list[Line]] = {}
    by_page: dict[tuple[Path, str], list[Line]] = {}
    for page in PAGES:
        for match in CODE.finditer(page.read_text()):
            code = re.sub(r"\\\n\s*", " ", next(g for g in match.groups() if g is not None))  # shell `\` lines
            for text in code.splitlines():
                named = COMMAND.search(text)
                pairs = [(k, v) for k, v in OVERRIDE.findall(text)
                         if k.split(".")[0] not in NOT_KEYS and not k.startswith("hydra.")]
                owners = [c for k, _ in pairs[:1] for c in ([named.group(1)] if named else []) + list(COMMANDS)
                          if holds(c, k)]
                if not owners:
                    continue  # prose naming a value (`sigma=0` of a chosen stage), not keys to set
                command = owners[0]
                line = Line(tuple(f"{k}={('[]' if v.startswith('[') else '0') if PLACEHOLDER.search(v) else v}"
                                  for k, v in pairs if holds(command, k)
                                  and not (PLACEHOLDER.search(v) and k.replace(".", "/") in groups())),
                            " -m " in f" {text} ")
                by_page.setdefault((page, command), []).append(line)
                for key, value in pairs:
                    if not PLACEHOLDER.search(value) and holds(command, key):
                        by_key.setdefault((command, key), []).append(line)
    return by_key, by_page


DOCUMENTED, PAGE_LINES = documented()
CASES = sorted(k for k in DOCUMENTED if k[1] not in FREE)


def preflight(command: str, overrides: Sequence[str], multirun: bool = False):
    """Returns the config the command line's preflight composes (a sweep's first value); ConfigError if it refuses."""
    return check_command_line(command, [*REQUIRED[command], *overrides], multirun)


@lru_cache(None)  # documented lines repeat across keys, and each costs a Hydra compose or more
def composed(command: str, overrides: tuple[str, ...], multirun: bool):
    """Returns preflight's config of the line, or None if it refuses."""
    try:
        return preflight(command, overrides, multirun)
    except ConfigError:
        return None


def key_type(cfg, key: str):
    """Returns the type the composed config's schema gives the key (Optional[X] as X), or None (Any)."""
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    holder = OmegaConf.select(cfg, parent) if parent else cfg
    node = holder._get_node(leaf) if hasattr(holder, "_get_node") else None
    kind = getattr(node, "_metadata", None) and node._metadata.ref_type
    if get_origin(kind) is Union:  # Optional[X] -> X
        kind = next(k for k in get_args(kind) if k is not type(None))
    kind = get_origin(kind) or kind  # List[str] -> list
    return kind if isinstance(kind, type) else None


def wrong_value(kind) -> str:
    """Returns a value of the wrong kind for a key of type `kind`."""
    from enum import Enum

    for types, value in ((bool, "maybe"), ((int, float, list), "many"), (Enum, "no_such_choice"), (str, "[1,2]")):
        if kind is not None and issubclass(kind, types):
            return value
    return "{a: 1}"  # a list or a node given a mapping


def test_the_pages_document_keys_and_free_keys_are_documented():
    assert len(CASES) >= 40, "the docs' code lost its overrides: is CODE or OVERRIDE still right?"
    text = "".join(page.read_text() for page in PAGES)
    assert [key for key in FREE if f"{key}=" not in text] == [], "FREE names a key no page documents"


@pytest.mark.parametrize("command,key", CASES, ids=[f"{c}:{k}" for c, k in CASES])
def test_a_documented_key_composes_as_documented_and_fails_in_one_line_with_a_wrong_value(command, key):
    lines = DOCUMENTED[command, key]
    # a line alone, else beside each line of the page's code for the command (a prose span's setting)
    pages = {page for (page, c), ls in PAGE_LINES.items() if c == command and set(ls) & set(lines)}
    candidates = [*lines, *(Line((*other.overrides, *line.overrides), other.multirun or line.multirun)
                            for line in lines for page in sorted(pages) for other in PAGE_LINES[page, command])]
    valid = next((line for line in candidates if composed(command, line.overrides, line.multirun) is not None), None)
    assert valid, f"{command} {key}: no documented line composes: {lines}"
    overrides, multirun = list(valid.overrides), valid.multirun
    wrong = ("no_such_option" if key.replace(".", "/") in groups()
             else wrong_value(key_type(composed(command, valid.overrides, multirun), key)))
    with pytest.raises(ConfigError) as err:
        preflight(command, [o if o.partition("=")[0] != key else f"{key}={wrong}" for o in overrides], multirun)
    message = str(err.value)
    assert "\n" not in message and key.split(".")[-1] in message, message


def test_a_wrong_value_exits_2_with_one_line_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "trainer.epochs=many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segexp: error: trainer.epochs:") and "\n" not in err


def test_a_number_given_to_a_config_group_is_one_line_naming_its_options():
    # Hydra raises a plain ValueError for it, which the preflight once let through as a traceback
    with pytest.raises(ConfigError, match=r"^postprocess=0: choose an option of postprocess by name: .*watershed"):
        check_command_line("train", ["postprocess=0"])


def test_an_override_hydra_cannot_read_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"^model\.depth=\[: not an override Hydra can read"):
        check_command_line("train", ["model.depth=["])
