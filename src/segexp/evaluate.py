"""`segexp evaluate`: scores a checkpoint on held-out slices (ISBI V_rand/V_info and pixel scores)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from segexp.data import resolve_indices, to_channels
from segexp.errors import instantiate
from segexp.metrics import evaluate_slices
from segexp.predict import load_predictor
from segexp.visualize import mask_panel


def metrics_table(metrics: dict[str, float]) -> str:
    """Returns a two-column markdown table of the metrics."""
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Predicts the chosen slices, scores them, writes metrics.json; returns the metrics."""
    data = instantiate(cfg.data, _convert_="all")
    indices = range(len(data.images)) if cfg.slices is None else resolve_indices(cfg.slices, len(data.images), "slices")
    tracker = instantiate(cfg.tracking)
    checkpoint, channels, predictor = load_predictor(cfg.ckpt, cfg.inference, cfg.tracking.uri)
    images = [to_channels(data.images[i], channels) for i in indices]
    truths = [data.masks[i] for i in indices]
    probs = [predictor(image) for image in images]
    metrics = evaluate_slices(probs, truths, cfg.inference.threshold, data.foreground)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    source_run = tracker.run_for_checkpoint(checkpoint)
    tags = {"checkpoint": str(checkpoint), "evaluated_slices": ",".join(data.names[i] for i in indices)}
    with tracker.run("evaluate", tags, run_id=source_run):
        suffix = "_tta" if cfg.inference.tta else ""
        tracker.log_metrics({f"eval_{k}{suffix}": v for k, v in metrics.items()})
        for i, (image, truth, prob) in enumerate(list(zip(images, truths, probs))[: cfg.log_images]):
            tracker.log_image(mask_panel(image, truth, prob), f"eval{suffix}/{data.names[indices[i]]}", 0)
    print(metrics_table(metrics))
    print(f"[segexp] {len(probs)} slices scored; metrics in {output_dir / 'metrics.json'}"
          + (f"; logged to run {source_run}" if source_run else ""), flush=True)
    return metrics
