"""Command line: `segexp train|predict|evaluate [Hydra overrides]`.

Dispatches to Hydra entry points built at call time (the config directory is found at
run time, so the same code serves a checkout and an installed wheel). Nothing here
imports TensorFlow: `--help` and `train --cfg job` stay instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMANDS = {
    "train": ("train", "train a model from the config (Hydra overrides follow, -m for sweeps)"),
    "predict": ("predict", "probability maps for images: ckpt=PATH input=DIR_OR_FILE output=DIR"),
    "evaluate": ("evaluate", "score a checkpoint on held-out slices: ckpt=PATH [data=...]"),
}


def config_dir() -> Path:
    """Returns the conf/ directory: inside the installed package, else the checkout's."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> dict[str, list[str]]:
    """Returns {group: [options]} read from the YAML files, for the help text."""
    root = config_dir()
    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}
    return {group: options for group, options in groups.items() if options}


def usage() -> str:
    lines = ["usage: segexp COMMAND [overrides ...] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "config groups (choose with GROUP=OPTION):"]
    lines += [f"  {group:<15} {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "examples:", "  segexp train model=unet_small aug=heavy",
              "  segexp train -m optimizer.lr=1e-4,3e-4,1e-3", "  segexp train debug=smoke",
              "", "`segexp COMMAND --help` shows the composed config and Hydra's options."]
    return "\n".join(lines)


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


def train_task(cfg):
    """Hydra task: trains one job and returns the objective, for sweepers to optimize."""
    from hydra.core.hydra_config import HydraConfig

    from segexp.train import train

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if cfg.resume:
        from omegaconf import OmegaConf

        from segexp.resume import read_state, resumed_config
        from segexp.rundir import resolve_resumable
        from segexp.schema import TrainConfig

        run = resolve_resumable(cfg.resume, cfg.tracking.uri)
        cfg = resumed_config(run, OmegaConf.structured(TrainConfig), overrides)
        metrics = train(cfg, run.path, overrides, resume=read_state(run))
    else:
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides)
    return metrics.get(cfg.objective)


def predict_task(cfg):
    from segexp.predict import predict

    predict(cfg)


def evaluate_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.evaluate import evaluate

    return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


TASKS = {"train": train_task, "predict": predict_task, "evaluate": evaluate_task}


def output_root(argv: list[str]) -> Path:
    """Returns the directory Hydra will create run directories in, from the overrides or the default."""
    key = "hydra.sweep.dir=" if ("-m" in argv or "--multirun" in argv) else "hydra.run.dir="
    chosen = [a[len(key):] for a in argv if a.startswith(key)]
    # the part before any ${...} interpolation exists before Hydra resolves the rest
    return Path(chosen[-1].split("${")[0] or ".") if chosen else Path("outputs")


def check_writable(directory: Path) -> str | None:
    """Returns a one-line problem if directory cannot be created and written, else None."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as err:
        return (f"{directory}: output directory not writable ({err.strerror}); run from a writable directory "
                "or set hydra.run.dir=... (hydra.sweep.dir=... for -m)")


def run_hydra(command: str, argv: list[str]) -> None:
    import hydra

    from segexp.schema import register_configs

    register_configs()
    config_name, _ = COMMANDS[command]
    sys.argv = [f"segexp {command}", *argv]
    main = hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    main(report_errors(TASKS[command]))()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"segexp: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    informational = any(a in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for a in rest)
    problem = None if informational else check_writable(output_root(rest))
    if problem:
        print(f"segexp: error: {problem}", file=sys.stderr)
        sys.exit(2)
    run_hydra(command, rest)


if __name__ == "__main__":
    main()
