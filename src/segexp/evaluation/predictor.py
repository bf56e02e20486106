"""A predictor for a checkpoint: image (H, W, C) -> (H, W) probability of white, by overlap-tile
prediction (and TTA) at the size its run trained on; for a sweep's checkpoints, the mean of theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.data.images import resize_image
from segexp.errors import ConfigError
from segexp.evaluation.tiling import predict_image
from segexp.models.loading import load_model
from segexp.rundir import ModelSource, RunDir


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
