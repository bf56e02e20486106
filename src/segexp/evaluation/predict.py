"""Predicting files (`segexp predict`): probability maps (and masks, overlays) for images of any size, from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from segexp.data.images import IMAGE_SUFFIXES, natural_key, read_image, to_channels, to_unit_float
from segexp.errors import DataError
from segexp.evaluation.predictor import load_source_predictor
from segexp.evaluation.visualize import prediction_overlay
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


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def predict(cfg: DictConfig) -> list[Path]:
    """Writes <stem>.png (probability, 255 = white) and optional mask/overlay per input; returns their paths."""
    from tqdm import tqdm

    inputs = list_inputs(Path(cfg.input))
    channels, predictor = load_source_predictor(resolve_model_source(cfg.ckpt), cfg.inference)
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
        if cfg.save_overlay:
            write_png(output / f"{path.stem}_overlay.png", prediction_overlay(image, prob, cfg.inference.threshold))
    print(f"[segexp] wrote {len(written)} probability maps to {output}", flush=True)
    return written
