"""`segexp predict`: probability maps (and masks, overlays) for images of any size, from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.data import IMAGE_SUFFIXES, natural_key, read_image, resize_image, to_channels, to_unit_float
from segexp.errors import ConfigError, DataError
from segexp.inference import predict_image
from segexp.models import load_model
from segexp.rundir import ModelSource, RunDir, resolve_model_source
from segexp.visualize import prediction_overlay


def model_channels_and_multiple(model) -> tuple[int, int]:
    """Returns (input channels, the size multiple the model pads to)."""
    channels = int(model.input_shape[-1])
    pads = [layer.multiple for layer in model.layers if hasattr(layer, "multiple")]
    return channels, (pads[0] if pads else 1)


def inference_size(inference: DictConfig, run: RunDir | None) -> list[int] | None:
    """Returns the [height, width] the model should see: inference.resize, else the data.resize of the
    training run that wrote the checkpoint (its saved config), else None (native size).

    A model trained on resized slices (experiment=seed_replica: 512 -> 256) has learned structures at
    that scale; fed the native size it sees them twice as large and scores far lower.
    """
    if inference.resize is not None:
        size = list(inference.resize)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"inference.resize: must be null or [height, width] with both >= 1, got {size}")
        return size
    saved = run.saved_config() if run else None
    resize = OmegaConf.select(saved, "data.resize") if saved is not None else None
    return list(resize) if resize is not None else None


def at_size(predict: Callable[[np.ndarray], np.ndarray], size: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Returns `predict` run on the image resized to size = [height, width] as data.resize does in training,
    its probability map resized back to the image's own size (bilinear)."""
    import cv2

    def run(image: np.ndarray) -> np.ndarray:
        prob = predict(resize_image(image, size))
        return cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return run


def make_predictor(model, inference: DictConfig, size: Sequence[int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Returns image (H, W, C) -> (H, W) probability of white, by overlap-tile prediction (at `size`, if given)."""
    _, multiple = model_channels_and_multiple(model)

    def predict_batch(tiles: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(tiles), np.float32)

    def predict(image: np.ndarray) -> np.ndarray:
        return predict_image(predict_batch, image, tile=inference.tile, overlap=inference.overlap,
                             batch_size=inference.batch_size, multiple=multiple, tta=inference.tta)
    return at_size(predict, size) if size else predict


def load_predictor(checkpoint: Path, run: RunDir | None, inference: DictConfig):
    """Returns (input channels, predictor) for the checkpoint, at the size its run trained on."""
    size = inference_size(inference, run)  # config errors before the model loads
    model = load_model(checkpoint)
    channels, _ = model_channels_and_multiple(model)
    if size:
        source = "inference.resize" if inference.resize is not None else "the training's data.resize"
        print(f"[segexp] predicting at {size[0]}x{size[1]} ({source}), probabilities resized back to each image",
              flush=True)
    return channels, make_predictor(model, inference, size)


def load_source_predictor(source: ModelSource, inference: DictConfig):
    """Returns (input channels, predictor) of a ModelSource: for an ensemble, the mean of its members'
    probabilities (each member at the size its own run trained on)."""
    loaded = [load_predictor(checkpoint, run, inference) for checkpoint, run in source.members]
    channels = {c for c, _ in loaded}
    if len(channels) > 1:
        raise ConfigError(f"the ensemble's checkpoints take different input channels {sorted(channels)}; "
                          "name one checkpoint, or a sweep whose jobs trained on the same data")
    if not source.is_ensemble:
        return loaded[0]
    print(f"[segexp] ensemble of {len(loaded)} checkpoints (the mean of their probabilities): "
          + ", ".join(str(c.parent) for c, _ in source.members), flush=True)
    predictors = [p for _, p in loaded]
    return channels.pop(), lambda image: np.mean([predict(image) for predict in predictors], axis=0)


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
