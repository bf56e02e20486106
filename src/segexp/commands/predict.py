"""Predicting files (`segexp predict`): probability maps (and masks, overlays) for images of any size, from a
checkpoint; for a K-class checkpoint, class index masks, their colours and a probability map per class. An image
or volume larger than memory is read, predicted and written to Zarr a band of tiles at a time (predict_streamed)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig

from segexp.checks import check_config, check_prediction_outputs, streaming_problem
from segexp.data.images import IMAGE_SUFFIXES, natural_key, read_image, to_channels, to_unit_float
from segexp.data.sets import Classes
from segexp.data.volumes import HDF5_SUFFIXES, TIFF_SUFFIXES, Volume, is_volume_file, open_volume
from segexp.errors import ConfigError, DataError
from segexp.evaluation.metrics import predicted_classes
from segexp.evaluation.visualize import class_overlay, color_labels, prediction_overlay, write_png
from segexp.inference.predictor import LoadedPredictor, load_source, run_classes, run_target, source_classes
from segexp.inference.stream import create_zarr_array, progress, stream_tiled, tile_count
from segexp.postprocessing.stage import boundary_map
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


def input_images(source: Path, key: str | None) -> tuple[int, Iterator[tuple[str, np.ndarray]]]:
    """Returns (how many, an iterator of (output stem, pixels as read)): the image files `source` names (a file or
    a directory), or the z slices of a volume (a multi-page TIFF, an HDF5 file or a Zarr array; `input_key` the
    dataset inside), named <stem>_<z> and read one at a time."""
    if source.exists() and is_volume_file(source):
        volume = open_volume(source, key, "input", single=True)

        def slices():
            with volume:
                for z in range(volume.size[0]):
                    yield f"{source.stem}_{z}" if volume.is_stack else source.stem, volume.slice(z)

        return volume.size[0], slices()
    if key is not None:
        raise ConfigError(f"input_key={key}: {source} is not a volume (HDF5 file, Zarr array or group) to take a "
                          "dataset from; set input_key=null")
    files = list_inputs(source)
    return len(files), ((path.stem, read_image(path)) for path in files)


def lazy_input(source: Path) -> bool:
    """True for an input predict can read region by region: a TIFF, an HDF5 file or a Zarr array or group."""
    return source.exists() and (source.suffix.lower() in (*TIFF_SUFFIXES, *HDF5_SUFFIXES) or is_volume_file(source))


def streamed_input(cfg: DictConfig) -> tuple[Volume, str] | tuple[None, None]:
    """Returns (the input opened lazily, why it is streamed) when it is to be streamed to Zarr - output_format=zarr,
    or output_format=auto and a slice of more than stream_megapixels - else (None, None)."""
    source, fmt = Path(cfg.input), str(cfg.output_format)
    if fmt == "png" or (fmt == "auto" and not lazy_input(source)):
        return None, None
    if not lazy_input(source):
        raise DataError(f"{source}: output_format=zarr reads a TIFF ({', '.join(TIFF_SUFFIXES)}), an HDF5 file "
                        f"({', '.join(HDF5_SUFFIXES)}) or a Zarr array region by region; other images are read "
                        "whole: set output_format=png")
    group = streamed_output(cfg)
    if group.resolve() == source.resolve():
        raise ConfigError(f"output={cfg.output}: the prediction {group} would overwrite the input; choose another "
                          "output directory")
    volume = open_volume(source, cfg.input_key, "input", single=True)
    _, height, width = volume.size
    megapixels = height * width / 1e6
    if fmt == "zarr":
        return volume, "output_format=zarr"
    if megapixels > cfg.stream_megapixels:
        return volume, (f"output_format=auto: {volume.where} has slices of {megapixels:.0f} megapixels, more than "
                        f"stream_megapixels={cfg.stream_megapixels:g}")
    volume.close()
    return None, None


def streamed_output(cfg: DictConfig) -> Path:
    """Returns the Zarr group a streamed prediction writes: <output>/<input name without suffixes>.zarr."""
    return Path(cfg.output) / f"{Path(cfg.input).name.split('.')[0] or 'input'}.zarr"


def predict_streamed(cfg: DictConfig, volume: Volume, loaded: LoadedPredictor, why: str) -> Path:
    """Predicts every slice of `volume` tile by tile (inference/stream.py) into the Zarr group
    <output>/<input stem>.zarr, chunked inference.tile x inference.tile, z first for a volume: `probability`
    (float32, 1 = cell) and with save_mask `mask` (uint8, 255 = cell) for a binary checkpoint; `probabilities`
    (float32, one channel per class, last) and `classes` (uint8 index) for a K-class one; `affinities` (float32,
    one channel per offset, last) for an affinity one. Returns the group's path."""
    inference = cfg.inference
    depth, height, width = volume.size
    stack = volume.is_stack
    group = streamed_output(cfg)
    group.parent.mkdir(parents=True, exist_ok=True)
    lead = (depth,) if stack else ()
    chunk = inference.tile

    def array(name: str, channels: int, dtype: str):
        shape = (*lead, height, width, *((channels,) if channels > 1 else ()))
        return create_zarr_array(group, name, shape, dtype, chunk, stack)

    if loaded.target.affinities:
        arrays = {"affinities": (array("affinities", loaded.outputs, "float32"), lambda block: block)}
    elif loaded.outputs > 1:
        arrays = {"probabilities": (array("probabilities", loaded.outputs, "float32"), lambda block: block),
                  "classes": (array("classes", 1, "uint8"), lambda block: np.argmax(block, -1).astype(np.uint8))}
    else:
        arrays = {"probability": (array("probability", 1, "float32"), lambda block: block)}
        if cfg.save_mask:
            arrays["mask"] = (array("mask", 1, "uint8"),
                              lambda block: np.where(block >= inference.threshold, 255, 0).astype(np.uint8))
    tiles = tile_count(height, width, inference.tile, inference.overlap, loaded.multiple)
    print(f"[segexp] {why}: streaming {volume.where} ({depth} x {height} x {width}) to {group} "
          f"({', '.join(arrays)}), {tiles} tiles per slice", flush=True)
    bar = progress(depth * tiles, "predict", "tile")
    with bar:
        for z in range(depth):
            index = (z,) if stack else ()

            def read(rows: slice, cols: slice) -> np.ndarray:
                return to_channels(to_unit_float(volume.region(z, rows, cols), cfg.normalize), loaded.channels)

            def write(top: int, left: int, block: np.ndarray) -> None:
                where = (*index, slice(top, top + block.shape[0]), slice(left, left + block.shape[1]))
                for stored, derive in arrays.values():
                    stored[where] = derive(block)

            stream_tiled(loaded.tiles, read, height, width, write, inference.tile, inference.overlap,
                         inference.batch_size, loaded.multiple, bar.update)
    return group


def write_labels(path: Path, labels: np.ndarray) -> Path:
    """Writes a label image losslessly: a 16-bit PNG, or a 32-bit TIFF beside it past 65535 segments."""
    if labels.max() < 2 ** 16:
        write_png(path, labels.astype(np.uint16))
        return path
    from PIL import Image

    path = path.with_suffix(".tif")
    Image.fromarray(labels.astype(np.int32)).save(path)
    return path


def to_uint8(prob: np.ndarray) -> np.ndarray:
    """Returns a probability map as uint8, 255 = probability 1."""
    return (np.clip(prob, 0, 1) * 255).round().astype(np.uint8)


def write_class_maps(output: Path, stem: str, probs: np.ndarray, classes: Classes) -> Path:
    """Writes <stem>.png (uint8 index of the most probable class per pixel), <stem>_color.png (those classes in
    their colours) and <stem>_prob_<class>.png per class (255 = probability 1); returns the index mask's path."""
    labels = predicted_classes(probs)
    write_png(output / f"{stem}.png", labels)
    write_png(output / f"{stem}_color.png", color_labels(labels, classes.colors()))
    for index, name in enumerate(classes.names):
        write_png(output / f"{stem}_prob_{name}.png", to_uint8(probs[..., index]))
    return output / f"{stem}.png"


def predict(cfg: DictConfig) -> list[Path]:
    """Writes <stem>.png (probability, 255 = white) and optional mask/overlay per input and, after a
    postprocess stage, <stem>_labels.png (one integer per segment, 0 on boundaries) and <stem>_boundaries.png
    (the challenge's format: cells 255, boundaries 0); returns the probability maps' paths. An affinity
    checkpoint's <stem>.png is the cell probability its short-range affinities imply, and with save_affinities
    <stem>_affinities.tif holds the affinities themselves (float32, one page per offset of its run's target).

    A K-class checkpoint writes write_class_maps' files (and <stem>_overlay.png, the image tinted by class, with
    save_overlay; save_mask adds nothing: <stem>.png is the mask) instead; returns the index masks' paths.
    """
    from segexp.data.affinities import cell_map
    from segexp.evaluation.stage_choice import plan_stage, run_stage
    from segexp.postprocessing import stage as stages

    check_config("predict", cfg)
    volume, why = streamed_input(cfg)
    if volume is not None:
        with volume:
            return [predict_volume_streamed(cfg, volume, why)]
    count, inputs = input_images(Path(cfg.input), cfg.input_key)
    source = resolve_model_source(cfg.ckpt)
    run = source.members[0][1]
    declared, trained_for = run_classes(run), run_target(run)
    # the stage is planned (and refused) before the model loads when the run says what it predicts; a K-class
    # run's maps are written as classes, without one; a checkpoint without its run is planned once its outputs tell
    early = run is not None and (declared is None or declared.outputs <= 1 or trained_for.affinities)
    plan = plan_stage(cfg.postprocess, source, "predict", trained_for) if early else None
    channels, outputs, predictor, target, *_ = load_source(source, cfg.inference)
    classes = source_classes(source, outputs)
    check_prediction_outputs(cfg.postprocess, run, classes, target, cfg.save_affinities)
    if outputs > 1 and not target.affinities:
        stage = stages.Stage()
        outputs_classes = True
    else:
        stage = run_stage(plan or plan_stage(cfg.postprocess, source, "predict", target), predictor, channels)
        outputs_classes = False
    if stage.active:
        print(f"[segexp] postprocess: {stage.describe()}", flush=True)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, raw in progress_of(inputs, count):
        image = to_channels(to_unit_float(raw, cfg.normalize), channels)
        prediction = predictor(image)
        prob = cell_map(prediction, target) if target.affinities else prediction
        if cfg.save_affinities:
            import tifffile

            tifffile.imwrite(output / f"{stem}_affinities.tif", np.moveaxis(prediction, -1, 0),
                             metadata={"axes": "CYX"})
        if outputs_classes:
            written.append(write_class_maps(output, stem, prob, classes))
            if cfg.save_overlay:
                write_png(output / f"{stem}_overlay.png",
                          class_overlay(image, predicted_classes(prob), classes.colors()))
            continue
        written.append(output / f"{stem}.png")
        write_png(written[-1], to_uint8(prob))
        if cfg.save_mask:
            write_png(output / f"{stem}_mask.png", np.where(prob >= cfg.inference.threshold, 255, 0).astype(np.uint8))
        if stage.active:
            labels = stage.apply(prediction)
            write_labels(output / f"{stem}_labels.png", labels)
            write_png(output / f"{stem}_boundaries.png", boundary_map(labels))
        if cfg.save_overlay:
            write_png(output / f"{stem}_overlay.png", prediction_overlay(image, prob, cfg.inference.threshold))
    what = f"{classes.count}-class index masks" if outputs_classes else "probability maps"
    print(f"[segexp] wrote {len(written)} {what} to {output}", flush=True)
    return written


def progress_of(inputs: Iterator, count: int) -> Iterator:
    """Yields the inputs, counted on a progress bar."""
    with progress(count, "predict", "image") as bar:
        for item in inputs:
            yield item
            bar.update(1)


def predict_volume_streamed(cfg: DictConfig, volume: Volume, why: str) -> Path:
    """Refuses in one line what a stream cannot do (before the model loads, and what depends on how its models
    tile before any tile is predicted), and streams `volume` to Zarr; returns the Zarr group's path."""
    from segexp.postprocessing import stage as stages

    source = resolve_model_source(cfg.ckpt)
    run = source.members[0][1]
    method, *_ = stages.configured(stages.of_run(cfg.postprocess, run.saved_config() if run else None))
    if (problem := streaming_problem(cfg, method)) is not None:  # before the model loads: the run's own stage too
        raise ConfigError(f"{why}: {problem}")
    loaded = load_source(source, cfg.inference)
    classes = source_classes(source, loaded.outputs)
    check_prediction_outputs(cfg.postprocess, run, classes, loaded.target, cfg.save_affinities)
    if (problem := streaming_problem(cfg, method, loaded.tiles is not None)) is not None:  # how the models tile
        raise ConfigError(f"{why}: {problem}")
    group = predict_streamed(cfg, volume, loaded, why)
    print(f"[segexp] wrote {group}", flush=True)
    return group
