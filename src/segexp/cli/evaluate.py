"""`segexp evaluate`: scores a checkpoint on slices it never saw; metrics.json in the job's directory. A sweep of
the folds of one cross-validation, on its own data, is scored fold by fold (segexp.commands.crossval)."""

from __future__ import annotations

from pathlib import Path


def task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.commands.evaluate import evaluate
    from segexp.commands.crossval import evaluate_folds, fold_indices
    from segexp.tracking.references import resolve_model_source

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    source = resolve_model_source(cfg.ckpt, cfg.tracking.uri)
    folds = fold_indices(source, cfg.ckpt) if cfg.data is None else None
    if folds is not None:
        return evaluate_folds(cfg, source, folds, output_dir)
    return evaluate(cfg, output_dir, source)
