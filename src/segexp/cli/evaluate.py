"""`segexp evaluate`: scores a checkpoint on slices it never saw; metrics.json in the job's directory."""

from __future__ import annotations

from pathlib import Path


def task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.native_logs import import_tensorflow

    import_tensorflow()
    from segexp.evaluation.evaluate import evaluate

    return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
