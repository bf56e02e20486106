"""data=volume: ISBI as its two TIFF stacks gives the PNG folder's slices, digests and scores; HDF5 and Zarr volumes
(masks or instance ids) train, predict and evaluate; bad volumes stop in one line naming the file and key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHALLOW, TINY, compose_config
from segexp.data.affinities import affinity_target, instance_objects, object_ids
from segexp.data.classes import decode_instances
from segexp.data.datasets import default_isbi_root, load_isbi2012, load_volume, voronoi_cells
from segexp.data.images import read_image
from segexp.data.sets import IGNORE
from segexp.errors import DataError

pytestmark = pytest.mark.xdist_group("test_volumes")  # one worker builds the module fixtures once

BIG = np.uint64(2**33)  # instance ids beyond 32 bits, as CREMI's neuron_ids may be
TINY_SPLIT = ["split.select=[-2]", "split.report=[-1]"]


@pytest.fixture(scope="module")
def isbi_stacks(tmp_path_factory):
    """Returns (train-volume.tif, train-labels.tif): the shipped ISBI PNGs as the challenge distributes them."""
    return write_isbi_stacks(tmp_path_factory.mktemp("isbi_stacks"))


def write_isbi_stacks(directory):
    """Writes ISBI's 30 training slices and labels as the challenge distributes them: two multi-page TIFFs
    (the labels zlib-compressed, so they are read page by page rather than memory-mapped); returns their paths."""
    import tifffile

    root = default_isbi_root() / "train"
    read = lambda part: np.stack([np.asarray(Image.open(root / part / f"{z}.png")) for z in range(30)])  # noqa: E731
    directory.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(directory / "train-volume.tif", read("image"))
    tifffile.imwrite(directory / "train-labels.tif", read("label"), compression="zlib")
    return directory / "train-volume.tif", directory / "train-labels.tif"


def cells_volume(count: int = 6, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 raw, uint64 instance ids) of Voronoi cells: each cell its own id past 2^33 and brightness,
    dark where the ids' derived boundary runs."""
    rng = np.random.default_rng(seed)
    ids = np.stack([voronoi_cells(size, 10, rng) for _ in range(count)]).astype(np.uint64) + BIG
    raw = np.stack([np.where(decode_instances(s, "cells") == 0, 30, 120 + (s - BIG).astype(np.int64) * 10)
                    for s in ids]) + rng.integers(0, 20, ids.shape)
    return raw.astype(np.uint8), ids


def write_hdf5(path, raw, labels):
    import h5py

    with h5py.File(path, "w") as f:
        f["volumes/raw"] = raw
        f["volumes/labels/neuron_ids"] = labels
    return path


def write_zarr(path, raw, labels):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("raw", data=raw)
    group.create_array("labels", data=labels)
    return path


def test_isbi_from_its_stacks_is_the_png_folder_slice_for_slice(isbi_stacks):
    images, labels = isbi_stacks
    folder = load_isbi2012(classes=["membrane", "cell"])
    stacks = load_volume(str(images), str(labels), classes=["membrane", "cell"])
    assert stacks.names == folder.names == [str(z) for z in range(30)]
    assert stacks.digests == folder.digests
    assert all(np.array_equal(a, b) for a, b in zip(stacks.images, folder.images))
    assert all(np.array_equal(a, b) for a, b in zip(stacks.masks, folder.masks))
    assert stacks.objects is None  # a mask: the affinity target takes its cells, as for the folder


def test_hdf5_zarr_and_ome_zarr_give_the_same_slices(tmp_path):
    import zarr

    raw, ids = cells_volume(count=3, size=24)
    h5 = load_volume(*[str(write_hdf5(tmp_path / "c.h5", raw, ids))] * 2, "volumes/raw", "volumes/labels/neuron_ids",
                     labels="instances")
    zr = load_volume(*[str(write_zarr(tmp_path / "c.zarr", raw, ids))] * 2, "raw", "labels", labels="instances")
    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")  # OME-Zarr: (c, z, y, x), full resolution at "0"
    ome.attrs["multiscales"] = [{"axes": [{"name": n} for n in "czyx"], "datasets": [{"path": "0"}, {"path": "1"}]}]
    ome.create_array("0", data=raw[None])
    ome.create_array("1", data=raw[None, :, ::2, ::2])
    om = load_volume(str(tmp_path / "ome.zarr"), str(tmp_path / "c.zarr"), None, "labels", labels="instances")
    assert h5.names == zr.names == om.names == ["0", "1", "2"]
    assert h5.digests == zr.digests == om.digests
    assert all(np.array_equal(a, b) for a, b in zip(h5.masks, om.masks))
    assert all(np.array_equal(a, b) for a, b in zip(h5.objects, zr.objects))


def test_instance_ids_draw_boundaries_between_objects_and_are_the_affinity_objects():
    ids = np.array([[5, 5, 7, 7],
                    [5, 5, 7, 7],
                    [0, 0, 9, 9],
                    [5, 5, 9, 9]], np.uint64) * BIG
    mask = decode_instances(ids, "ids")
    assert mask.tolist() == [[1, 0, 0, 1],
                             [0, 0, 0, 0],   # a pixel is boundary where a 4-neighbour differs, on both sides
                             [0, 0, 0, 0],   # id 0 is boundary
                             [0, 0, 0, 1]]
    objects = instance_objects(ids)
    assert objects.dtype == np.int32 and objects.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 3, 3], [1, 1, 3, 3]]
    right = affinity_target(objects, [(0, 1)])[..., 0]
    assert right[0].tolist() == [1, 0, 1, 0]  # pixels of one object stay together even on its boundary
    assert not affinity_target(object_ids(mask, 0, IGNORE), [(0, 1)])[0, :, 0].any()  # the mask's cells lose that
    unlabelled = instance_objects(ids, ignore=int(9 * BIG))
    assert (unlabelled[2:, 2:] == -1).all() and decode_instances(ids, "ids", int(9 * BIG))[3, 3] == IGNORE


def test_a_stack_in_a_folder_is_refused_not_read_as_its_first_page(isbi_stacks):
    images, _ = isbi_stacks
    with pytest.raises(DataError, match=r"train-volume.tif: a stack of 30 images .* data=volume"):
        read_image(images)


def bad_volumes(tmp_path):
    """Returns [(load_volume arguments, the one line it must end in)] of volumes that cannot be used."""
    raw, ids = cells_volume(count=3, size=24)
    h5 = str(write_hdf5(tmp_path / "c.h5", raw, ids))
    floats = str(write_hdf5(tmp_path / "f.h5", raw, ids.astype(np.float32)))
    short = str(write_hdf5(tmp_path / "s.h5", raw, ids[:, :20]))
    flat = str(write_zarr(tmp_path / "flat.zarr", raw[0], ids[0]))
    return [
        ((h5, h5, "volumes/raw", "volumes/labels/ids"),
         f"{h5}: has no dataset 'volumes/labels/ids' (data.masks_key); its datasets: volumes/labels/neuron_ids, "
         "volumes/raw - set data.masks_key to one of them"),
        ((h5, h5, None, "volumes/raw"),
         f"{h5}: holds 2 datasets (data.images_key); its datasets: volumes/labels/neuron_ids, volumes/raw - set "
         "data.images_key to one of them"),
        ((flat, flat, "raw", "labels"),
         f"{flat}:raw: array has 2 dimensions (24, 24); a volume is (z, y, x) or (z, y, x, channels<=4) - for single "
         "images use data=folder, else save the array so"),
        ((h5, short, "volumes/raw", "volumes/labels/neuron_ids"),
         f"{h5}:volumes/raw: images are (z, y, x) = (3, 24, 24) but the labels {short}:volumes/labels/neuron_ids are "
         "(3, 20, 24); images and labels must have the same size"),
        ((h5, floats, "volumes/raw", "volumes/labels/neuron_ids", "instances"),
         f"{floats}:volumes/labels/neuron_ids: data.labels=instances needs integer object ids, but the labels are "
         "float32; store them as integers (e.g. uint32, uint64) or set data.labels=mask for a mask of classes"),
    ]


def test_bad_volumes_end_in_one_line_naming_the_file_and_key(tmp_path):
    for arguments, line in bad_volumes(tmp_path):
        with pytest.raises(DataError) as err:
            load_volume(*arguments)
        assert str(err.value) == line
    h5 = str(tmp_path / "c.h5")  # instance ids read as a mask: the line says how to read them
    with pytest.raises(DataError, match=r"c.h5:volumes/labels/neuron_ids z=0: mask is not binary .*; for object ids "
                                        r"set data.labels=instances$"):
        load_volume(h5, h5, "volumes/raw", "volumes/labels/neuron_ids")


def test_training_stops_at_a_bad_volume_before_anything_is_written(tmp_path):
    from segexp.training.train import train

    (arguments, line), *_ = bad_volumes(tmp_path)
    images, masks, images_key, masks_key = arguments
    cfg = compose_config("train", *TINY, "tracking=none", "data=volume", f"data.images={images}", f"data.masks={masks}",
                         f"data.images_key={images_key}", f"data.masks_key={masks_key}")
    with pytest.raises(DataError) as err:
        train(cfg, tmp_path / "run")
    assert str(err.value) == line and err.value.exit_code == 2  # the CLI prints it as one line and exits 2
    assert not (tmp_path / "run").exists()


def test_affinity_crops_take_the_instance_ids_as_their_objects(tmp_path):
    from segexp.training.build import crop_sampler, prepare_data

    raw, ids = cells_volume()
    h5 = write_hdf5(tmp_path / "c.h5", raw, ids)
    cfg = compose_config("train", *TINY, "data=volume", f"data.images={h5}", f"data.masks={h5}",
                         "data.images_key=volumes/raw", "data.masks_key=volumes/labels/neuron_ids",
                         "data.labels=instances", "target=affinities", *TINY_SPLIT)
    parts, _ = prepare_data(cfg)
    sampler = crop_sampler(cfg, parts["train"], None, None)
    expected = [instance_objects(ids[z]) for z in range(len(ids) - 2)]
    assert all(np.array_equal(t[..., 0], e) for t, e in zip(sampler.targets, expected))


def train_predict_evaluate(root, data: list[str], predict_input: list[str], *extra: str):
    """Trains a tiny run on `data` overrides, predicts `predict_input`, evaluates the run on its report slice;
    returns (train metrics, written maps, evaluate metrics)."""
    from segexp.commands.evaluate import evaluate
    from segexp.commands.predict import predict
    from segexp.training.train import train

    inference = ["inference.tile=64", "inference.overlap=8"]  # one pass per 48x48 slice
    metrics = train(compose_config("train", *TINY, *SHALLOW, "tracking=none", *data, *TINY_SPLIT, *extra, *inference),
                    root / "run")
    written = predict(compose_config("predict", f"ckpt={root / 'run'}", *predict_input, f"output={root / 'maps'}",
                                     *inference))
    scores = evaluate(compose_config("evaluate", f"ckpt={root / 'run'}", "tracking=none", *inference), root / "eval")
    return metrics, written, scores


@pytest.mark.slow
def test_an_hdf5_volume_of_instance_ids_trains_affinities_predicts_and_evaluates(tmp_path):
    raw, ids = cells_volume()
    h5 = write_hdf5(tmp_path / "cremi.h5", raw, ids)
    metrics, written, scores = train_predict_evaluate(
        tmp_path, ["data=volume", f"data.images={h5}", f"data.masks={h5}", "data.images_key=volumes/raw",
                   "data.masks_key=volumes/labels/neuron_ids", "data.labels=instances"],
        [f"input={h5}", "input_key=volumes/raw"], "target=affinities",
        "target.offsets=[[-1,0],[0,-1],[-3,0],[0,-3]]")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    names = {role: [entry["name"] for entry in entries] for role, entries in split["roles"].items()}
    assert names == {"train": ["0", "1", "2", "3"], "select": ["4"], "report": ["5"]}  # z indices, blocks along z
    assert [p.name for p in written] == [f"cremi_{z}.png" for z in range(6)]
    assert np.asarray(Image.open(written[0])).shape == (48, 48)
    assert np.isfinite(metrics["report_loss"]) and scores["v_rand"] == pytest.approx(metrics["report_v_rand"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["slices_status"] == "report"


@pytest.mark.slow
def test_a_zarr_array_of_masks_trains_predicts_and_evaluates(tmp_path):
    raw, ids = cells_volume(seed=1)
    store = write_zarr(tmp_path / "cells.zarr", raw, np.stack([decode_instances(s, "ids") * 255 for s in ids]))
    metrics, written, scores = train_predict_evaluate(
        tmp_path, ["data=volume", f"data.images={store}", f"data.masks={store}", "data.images_key=raw",
                   "data.masks_key=labels"], [f"input={store}", "input_key=raw"])
    assert [p.name for p in written] == [f"cells_{z}.png" for z in range(6)]
    assert scores["v_rand"] == pytest.approx(metrics["report_v_rand"])
    assert 0 <= scores["v_rand"] <= 1


@pytest.mark.slow
def test_isbi_from_its_stacks_trains_with_the_png_digests_and_scores_as_the_png_folder(isbi_stacks, tmp_path):
    from segexp.commands.evaluate import evaluate
    from segexp.commands.predict import predict
    from segexp.data.splits import split_record
    from segexp.training.build import prepare_data
    from segexp.training.train import train

    images, labels = isbi_stacks
    # no selection slice: the last epoch is kept, and no slice is scored before the report one
    last = ["split.select=[]", "trainer.checkpoint=last", "trainer.monitor=loss", "objective=loss"]
    inference = ["inference.tile=512", "inference.overlap=0", "tracking=none"]
    train(compose_config("train", *TINY, *SHALLOW, *last, *inference, "data=volume", f"data.images={images}",
                         f"data.masks={labels}"), tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())["roles"]
    from_pngs = split_record(prepare_data(compose_config("train", *TINY, *last, "data=isbi2012"))[0])["roles"]
    assert recorded == from_pngs and [e["name"] for e in recorded["report"]] == ["29"]
    on_stacks = evaluate(compose_config("evaluate", f"ckpt={tmp_path / 'run'}", *inference), tmp_path / "e_stacks")
    on_pngs = evaluate(compose_config("evaluate", f"ckpt={tmp_path / 'run'}", "data=isbi2012", *inference),
                       tmp_path / "e_pngs")
    assert on_pngs == on_stacks and {"v_rand", "v_info", "dice"} <= set(on_pngs)
    assert json.loads((tmp_path / "e_pngs" / "metrics.json").read_text())["slices_status"] == "report"
    import tifffile

    two = tmp_path / "two-slices.tif"  # a stack as predict's input; two pages of ISBI's keep it quick
    tifffile.imwrite(two, tifffile.imread(images)[-2:])
    written = predict(compose_config("predict", f"ckpt={tmp_path / 'run'}", f"input={two}",
                                     f"output={tmp_path / 'maps'}", *inference[:2]))
    assert [p.name for p in written] == ["two-slices_0.png", "two-slices_1.png"]
    assert np.asarray(Image.open(written[1])).shape == (512, 512)


def test_object_ids_with_more_classes_or_a_threshold_are_refused_by_the_preflight():
    from segexp.__main__ import check_command_line
    from segexp.errors import ConfigError

    volume = ["data=volume", "data.images=a.h5", "data.masks=b.h5", "data.labels=instances"]
    with pytest.raises(ConfigError, match=r"^data\.classes: data\.labels=instances derives two classes"):
        check_command_line("train", [*volume, "data.classes=[a,b,c]"])
    with pytest.raises(ConfigError, match=r"^data\.mask_threshold: binarizes masks"):
        check_command_line("evaluate", ["ckpt=run", *volume, "data.mask_threshold=127"])
