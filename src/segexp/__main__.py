"""Command line: `segexp COMMAND [Hydra overrides]`.

Dispatches to the command modules in segexp.cli (each a Hydra task), after a pre-flight composition of
the config (segexp.config.preflight) that reports any mistake in it as one line. The config directory
is found at run time, so the same code serves a checkout and an installed wheel. Nothing here
imports TensorFlow: `--help` and `train --cfg job` stay instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

COMMANDS = {
    "train": "train a model from the config (Hydra overrides follow, -m for sweeps)",
    "predict": "probability maps for images: ckpt=PATH input=DIR_OR_FILE output=DIR",
    "evaluate": "score a checkpoint on slices it never saw: ckpt=RUN_DIR [data=...]; a fold sweep fold by fold",
    "compare": "is B better than A? compare runs or sweeps (seeds, folds) with error bars: A B [C ...]",
    "reproduce": "train a finished run again from the store and diff its final metrics: RUN",
    "orphans": "end runs left RUNNING by a process that died (SIGKILL, power loss) on this host",
    "upload": "send what runs logged while the tracking store was unreachable: RUN_OR_SWEEP_DIR",
    "export": "a checkpoint as ONNX, SavedModel or LiteRT, checked on a real slice: ckpt=RUN format=... output=...",
}
BARE_ARGUMENTS = {"compare": "runs", "reproduce": "run", "upload": "run"}  # commands whose bare arguments are runs
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc")
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-name", "-cn", "--config-path",
               "-cp", "--experimental-rerun")


def usage() -> str:
    from segexp.config.files import config_groups

    lines = ["usage: segexp COMMAND [overrides ...] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (choose with GROUP=OPTION):"]
    lines += [f"  {group:<20} {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "examples:", "  segexp train model=unet_small aug=heavy",
              "  segexp train -m optimizer.lr=1e-4,3e-4,1e-3", "  segexp train debug=smoke",
              "  segexp train -m trainer.seed=1,2,3      (replicates: the parent gets mean, std, 95% CI)",
              "  segexp compare RUN_OR_SWEEP_A RUN_OR_SWEEP_B",
              "", "`segexp COMMAND --help` shows the composed config and Hydra's options."]
    return "\n".join(lines)


def split_argv(argv: list[str]) -> tuple[list[str], list[Path], bool, bool]:
    """Returns (the overrides, the --config-dir directories, multirun?, another config named?) of a
    command line; flags may give their value as the next word or after '='."""
    overrides, config_dirs, multirun, other_config, skip = [], [], False, False, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        flag, has_value, value = arg.partition("=") if arg.startswith("-") else (arg, False, "")
        if flag in ("-m", "--multirun"):
            multirun = True
        elif flag in VALUE_FLAGS:
            if not has_value:
                skip, value = True, argv[i + 1] if i + 1 < len(argv) else ""
            if flag in ("--config-dir", "-cd"):
                config_dirs.append(Path(value))
            other_config |= flag in ("--config-name", "-cn", "--config-path", "-cp")
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_dirs, multirun, other_config


def bare_as_override(argv: list[str], key: str) -> list[str]:
    """Returns a command line with its bare arguments (run ids, directories) as one override: a list for
    compare (`runs=[...]`), a single value for reproduce (`run=...`)."""
    kept, bare, skip = [], [], False
    for arg in argv:
        if skip or arg.startswith("-") or "=" in arg:
            kept.append(arg)
            skip = not skip and arg in VALUE_FLAGS
        else:
            bare.append(arg)
            skip = False
    if not bare:
        return argv
    quoted = [("'" + a.replace("\\", "\\\\").replace("'", "\\'") + "'") for a in bare]
    value = f"[{','.join(quoted)}]" if key == "runs" or len(quoted) > 1 else quoted[0]
    return [*kept, f"{key}={value}"]


def sweep_to_resume(argv: list[str]) -> list[str]:
    """Returns `train -m resume=<sweep dir> [...]` as the sweep's own command line - its recorded overrides
    (multirun.yaml) into the same directory, with resume_sweep=true - and any other argv unchanged."""
    from omegaconf import OmegaConf

    resume = [a for a in argv if a.startswith("resume=")]
    if not resume or not any(a in ("-m", "--multirun") for a in argv):
        return argv
    sweep_dir = Path(resume[-1].split("=", 1)[1]).expanduser()
    record = sweep_dir / "multirun.yaml"
    from segexp.rundir import SWEEP_RECORD

    if not (sweep_dir / SWEEP_RECORD).is_file() and not record.is_file():
        return argv  # not a sweep directory: each job resumes the run it names, as without -m
    if not record.is_file():
        from segexp.errors import ConfigError

        raise ConfigError(f"resume={sweep_dir}: no multirun.yaml there to take the sweep's overrides from")
    overrides = OmegaConf.load(record).hydra.overrides  # hydra's own too: e.g. an Optuna study's sweeper settings
    recorded = [*overrides.hydra, *overrides.task]
    kept = [o for o in recorded if not o.startswith(("hydra.sweep.dir=", "hydra.mode=", "resume_sweep=", "resume="))]
    rest = [a for a in argv if a not in resume]
    given = [a for a in rest if "=" in a]  # today's overrides go on top, e.g. hydra.sweeper.n_trials=20
    return [*(a for a in rest if "=" not in a), *kept, *given, f"hydra.sweep.dir={sweep_dir.resolve()}",
            "resume_sweep=true"]


def user_error(err: BaseException):
    """Returns the SegexpError in err's cause chain (Hydra's instantiate wraps them), or None."""
    from segexp.errors import SegexpError

    while err is not None and not isinstance(err, SegexpError):
        err = err.__cause__
    return err


def report_errors(task):
    """Wraps a Hydra task so a SegexpError prints one line and exits 2 (full traceback with HYDRA_FULL_ERROR=1)."""
    def wrapped(cfg):
        try:
            return task(cfg)
        except Exception as raised:
            err = user_error(raised)
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"segexp: error: {err}", file=sys.stderr, flush=True)
            if is_multirun():
                if err.exit_code == 130:  # Ctrl-C stops the whole sweep, not just this job
                    raise KeyboardInterrupt(str(err)) from err
                raise  # let the launcher record this job as failed and go on with the others
            sys.exit(err.exit_code)
    return wrapped


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def command_task(command: str):
    """Returns the Hydra task of a command: its segexp.cli module's `task`."""
    if command == "train":
        from segexp.cli.train import task
    elif command == "predict":
        from segexp.cli.predict import task
    elif command == "evaluate":
        from segexp.cli.evaluate import task
    elif command == "compare":
        from segexp.cli.compare import task
    elif command == "reproduce":
        from segexp.cli.reproduce import task
    elif command == "orphans":
        from segexp.cli.orphans import task
    elif command == "upload":
        from segexp.cli.upload import task
    else:
        from segexp.cli.export import task
    return task


def check_command_line(command: str, overrides: list[str], multirun: bool = False,
                       config_dirs: Sequence[Path] = ()) -> Any:
    """Raises ConfigError with one line for the first mistake in a command line: composition (every sweep value
    once), the cross-field checks of segexp.checks, the values the command needs. Returns the composed config
    (a sweep's first variant)."""
    from functools import partial

    from segexp.checks import check_config
    from segexp.config.preflight import preflight, require_values

    cfg = preflight(command, overrides, multirun, config_dirs, partial(check_config, command))
    require_values(command, cfg, COMMANDS[command])
    return cfg


def run_hydra(command: str, argv: list[str]) -> None:
    import hydra

    from segexp.config.files import config_dir
    from segexp.config.schema import register_configs

    register_configs()
    sys.argv = [f"segexp {command}", *argv]
    main = hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")
    main(report_errors(command_task(command)))()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"segexp: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    if command in BARE_ARGUMENTS:
        rest = bare_as_override(rest, BARE_ARGUMENTS[command])
    if command == "train":
        from segexp.errors import ConfigError

        try:
            rest = sweep_to_resume(rest)
        except ConfigError as err:
            print(f"segexp: error: {err}", file=sys.stderr)
            sys.exit(2)
    if not any(a in HELP_FLAGS for a in rest):
        from segexp.errors import ConfigError

        overrides, config_dirs, multirun, other_config = split_argv(rest)
        try:  # every config mistake is one line here, before Hydra, data or TensorFlow
            if not other_config:  # a config of the user's own is checked by Hydra alone
                check_command_line(command, overrides, multirun, config_dirs)
        except ConfigError as err:
            print(f"segexp: error: {err}", file=sys.stderr)
            sys.exit(2)
    run_hydra(command, rest)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `segexp --help | head`: the reader is gone, and so is anything left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail too
        sys.exit(1)
