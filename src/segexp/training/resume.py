"""Continuing an interrupted run: its config and where it stopped (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segexp.errors import ConfigError
from segexp.rundir import RunDir

# what decides which slices train, choose and report, and how: fixed for the life of a run, or its
# split.json and its best-so-far would describe another protocol than the one the run followed
FIXED_ON_RESUME = ("data", "split", "trainer.monitor", "trainer.monitor_mode", "trainer.checkpoint", "objective",
                   "optimizer.ema")  # the checkpoint's optimizer has its averaged weights or has none


@dataclass(frozen=True)
class ResumeState:
    epochs_done: int
    best: float | None
    best_epoch: int | None
    run_id: str | None


def read_state(run: RunDir) -> ResumeState:
    """Returns where the run stopped."""
    state = run.read_state()
    return ResumeState(state["epochs_done"], state.get("best"), state.get("best_epoch"), state.get("run_id"))


def resumed_config(run: RunDir, schema: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Returns the run's saved config with today's command-line overrides on top (resume= itself excluded)."""
    saved = run.saved_config()
    if saved is None:
        raise ConfigError(f"{run.config_file}: the run's config is missing, so it cannot be resumed")
    extra = [o for o in overrides if not o.startswith("resume=")]
    for override in extra:
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_ON_RESUME):
            raise ConfigError(f"{override}: a resumed run keeps its data, split, checkpoint choice and weight averaging "
                              f"({', '.join(FIXED_ON_RESUME)}); start a new run to change them")
        if "/" in key or isinstance(OmegaConf.select(saved, key), DictConfig):
            raise ConfigError(f"{override}: resume takes key=value changes of the saved config, not a new config "
                              "group option; start a new run for that")
    try:
        merged = OmegaConf.merge(schema, saved, OmegaConf.from_dotlist(extra))
    except OmegaConfBaseException as err:
        raise ConfigError(f"resume={run.path}: {str(err).splitlines()[0]}") from None
    merged.resume = str(run.path)
    return merged
