"""Predicting files (`segexp predict`): probability maps (and masks, overlays) for images of any size, from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from segexp.data.images import IMAGE_SUFFIXES, natural_key, read_image, to_channels, to_unit_float
from segexp.errors import DataError
from segexp.evaluation.postprocess import boundary_map
from segexp.evaluation.predictor import load_source_predictor
from segexp.evaluation.visualize import prediction_overlay, write_png
from segexp.tracking.references import resolve_model_source


def list_inputs(source: Path) -> list[Path]:
    """Returns the image files to predict: the file itself, or a directory's images in name order."""
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted((p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.stem))
        if files:
            return files
        raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in the input directory")
    raise DataError(f"{source}: input does not exist; pass input=FILE_OR_DIRECTORY")


def write_labels(path: Path, labels: np.ndarray) -> Path:
    """Writes a label image losslessly: a 16-bit PNG, or a 32-bit TIFF beside it past 65535 segments."""
    if labels.max() < 2 ** 16:
        write_png(path, labels.astype(np.uint16))
        return path
    from PIL import Image

    path = path.with_suffix(".tif")
    Image.fromarray(labels.astype(np.int32)).save(path)
    return path


def predict(cfg: DictConfig) -> list[Path]:
    """Writes <stem>.png (probability, 255 = white) and optional mask/overlay per input and, after a
    postprocess stage, <stem>_labels.png (one integer per segment, 0 on boundaries) and <stem>_boundaries.png
    (the challenge's format: cells 255, boundaries 0); returns the probability maps' paths."""
    from tqdm import tqdm

    from segexp.evaluation import stage as stages
    from segexp.evaluation.evaluate import run_stage

    stages.check(cfg.postprocess)
    inputs = list_inputs(Path(cfg.input))
    source = resolve_model_source(cfg.ckpt)
    channels, predictor = load_source_predictor(source, cfg.inference)
    stage = run_stage(cfg.postprocess, source, predictor, channels, "predict")
    if stage.active:
        print(f"[segexp] postprocess: {stage.describe()}", flush=True)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(inputs, desc="predict", unit="image"):
        image = to_channels(to_unit_float(read_image(path), cfg.normalize), channels)
        prob = predictor(image)
        written.append(output / f"{path.stem}.png")
        write_png(written[-1], (np.clip(prob, 0, 1) * 255).round().astype(np.uint8))
        if cfg.save_mask:
            write_png(output / f"{path.stem}_mask.png", np.where(prob >= cfg.inference.threshold, 255, 0).astype(np.uint8))
        if stage.active:
            labels = stage.apply(prob)
            write_labels(output / f"{path.stem}_labels.png", labels)
            write_png(output / f"{path.stem}_boundaries.png", boundary_map(labels))
        if cfg.save_overlay:
            write_png(output / f"{path.stem}_overlay.png", prediction_overlay(image, prob, cfg.inference.threshold))
    print(f"[segexp] wrote {len(written)} probability maps to {output}", flush=True)
    return written
