"""`segexp reproduce RUN`: trains a finished run again from the store and prints how its final metrics differ."""

from __future__ import annotations

from pathlib import Path


def task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.experiments.reproduce import reproduce
    from segexp.training.train import retrain

    reproduce(cfg, Path(HydraConfig.get().runtime.output_dir), retrain)
