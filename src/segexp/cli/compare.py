"""`segexp compare A B [C ...]`: is B better than A? A report in the job's directory and an MLflow run."""

from __future__ import annotations

from pathlib import Path


def task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.experiments.compare import compare

    compare(cfg, Path(HydraConfig.get().runtime.output_dir))
