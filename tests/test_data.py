"""Loading and validating data: real files in tmp_path, good and bad."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, write_png
from segexp.data.datasets import load_folder, load_isbi2012, make_synthetic, verify_manifest
from segexp.data.images import pixel_digest, read_image
from segexp.checks import check_crop_fits
from segexp.data.splits import ROLES, resolve_indices, roles_of, split, split_record
from segexp.errors import DataError


def test_isbi_loads_30_verified_slices_in_numeric_order():
    data = load_isbi2012(str(REPO / "data" / "isbi2012"))
    assert len(data.images) == 30 and data.names[:3] == ["0", "1", "2"] and data.names[-1] == "29"
    assert data.images[0].shape == (512, 512, 1) and data.images[0].dtype == np.float32
    assert set(np.unique(data.masks[0])) == {0, 1}
    assert 0.15 < 1 - np.mean(data.masks) < 0.3  # ~22% membrane


def test_default_split_trains_on_0_to_19_selects_on_20_to_24_and_reports_25_to_29(make_cfg):
    cfg = make_cfg()
    parts = split(make_synthetic(count=30, size=16, cells=4), cfg.split.select, cfg.split.report)
    names = {role: [int(n.removeprefix("synthetic_")) for n in part.names] for role, part in parts.items()}
    assert names == {"train": list(range(20)), "select": list(range(20, 25)), "report": list(range(25, 30))}


def test_modified_shipped_file_is_detected(tmp_path):
    root = tmp_path / "isbi"
    shutil.copytree(REPO / "data" / "isbi2012", root)
    verify_manifest(root)  # intact copy passes
    with open(root / "train" / "label" / "3.png", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match=r"label/3\.png: sha256 differs"):
        load_isbi2012(str(root))


@pytest.mark.parametrize("suffix,mode", [(".png", "L"), (".jpg", "RGB"), (".tif", "I;16"), (".png", "RGB")])
def test_folder_reads_gray_rgb_16bit_jpeg_tiff_of_odd_sizes(tmp_path, suffix, mode):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(33, 47), (60, 35)]):
        if mode == "I;16":
            pixels = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        else:
            pixels = rng.integers(0, 255, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "img" / f"{i}{suffix}")
        write_png(tmp_path / "msk" / f"{i}.png", (rng.random((h, w)) > 0.5).astype(np.uint8))  # 0/1 masks
    data = load_folder(str(tmp_path / "img"), str(tmp_path / "msk"))
    assert [im.shape[:2] for im in data.images] == [(33, 47), (60, 35)]
    assert data.channels == (3 if mode == "RGB" else 1)
    assert all(0.0 <= im.min() and im.max() <= 1.0 for im in data.images)
    if mode == "I;16":
        assert data.images[0].max() > 0.9  # scaled by the 16-bit range, not clipped at 255


def test_jpeg_mask_noise_needs_a_threshold(tmp_path):
    yy, xx = np.ogrid[:32, :32]
    mask = np.where((yy - 15) ** 2 + (xx - 17) ** 2 < 81, 255, 0).astype(np.uint8)  # a disc: JPEG rings at its edge
    write_png(tmp_path / "img" / "a.png", mask)
    (tmp_path / "msk").mkdir()
    Image.fromarray(mask).save(tmp_path / "msk" / "a.jpg", quality=60)
    with pytest.raises(DataError, match=r"a\.jpg: mask is not binary.*data\.mask_threshold"):
        load_folder(str(tmp_path / "img"), str(tmp_path / "msk"))
    data = load_folder(str(tmp_path / "img"), str(tmp_path / "msk"), mask_threshold=127)
    assert abs(int(data.masks[0].sum()) - int((mask == 255).sum())) < 10


def test_unmatched_files_are_listed(folder_data):
    images, masks = folder_data
    (masks / "s2.png").unlink()
    write_png(masks / "extra.png", np.zeros((40, 52), np.uint8))
    with pytest.raises(DataError, match=r"images without a mask: s2\.png; masks without an image: extra\.png"):
        load_folder(str(images), str(masks))


def test_size_mismatch_names_both_files(folder_data):
    images, masks = folder_data
    write_png(masks / "s1.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(DataError, match=r"s1\.png: image is 52x40 but its mask .*s1\.png is 20x20"):
        load_folder(str(images), str(masks))


def test_truncated_image_is_reported(folder_data):
    images, masks = folder_data
    content = (images / "s4.png").read_bytes()
    (images / "s4.png").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match=r"s4\.png: cannot be read as an image"):
        load_folder(str(images), str(masks))


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="images directory does not exist"):
        load_folder(str(tmp_path / "nope"), str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_folder(str(tmp_path / "empty"), str(tmp_path))


def test_split_needs_enough_images_and_crop_must_fit(folder_data):
    data = load_folder(*map(str, folder_data))
    with pytest.raises(DataError, match=r"split\.report=\[25, 26\] does not fit a data set of 6 images"):
        split(data, [-2], [25, 26])
    with pytest.raises(DataError, match="leave at least one for training"):
        split(make_synthetic(count=3, size=8, cells=2), [0], [1, 2])
    with pytest.raises(DataError, match="each once"):
        resolve_indices([1, -5], 6, "split.select")
    with pytest.raises(DataError, match=r"split\.select and split\.report share slices \['s5'\]"):
        split(data, [-2, -1], [5])
    parts = split(data, [-2], [-1])
    with pytest.raises(DataError, match=r"smaller than trainer\.crop_size=64; lower trainer\.crop_size to at most 40"):
        check_crop_fits(parts["train"], 64)


def test_split_is_three_disjoint_contiguous_roles_recorded_by_pixel_digest(folder_data, tmp_path):
    data = load_folder(*map(str, folder_data))
    parts = split(data, [-4, -3], [-2, -1])
    assert [parts[r].names for r in ROLES] == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    assert split(data, [], [-1])["select"].names == []  # no selection: train takes the rest
    record = split_record(parts)
    # the digest follows the pixels, not the file: a renamed TIFF copy of s4 is still a report slice
    copy = tmp_path / "copy"
    copy.mkdir()
    Image.open(folder_data[0] / "s4.png").save(copy / "renamed.tif")
    other = tmp_path / "other.png"
    Image.fromarray(np.full((40, 52), 7, np.uint8)).save(other)
    digests = [pixel_digest(read_image(copy / "renamed.tif")), pixel_digest(read_image(other)),
               pixel_digest(read_image(folder_data[0] / "s1.png"))]
    assert roles_of(record, digests) == ["report", None, "train"]


def test_synthetic_masks_are_exact_membranes():
    data = make_synthetic(count=2, size=64, cells=10, seed=3)
    image, mask = data.images[0][..., 0], data.masks[0]
    assert image[mask == 0].mean() < 0.3 < image[mask == 1].mean()
    assert 0.02 < 1 - mask.mean() < 0.3


def test_resize_keeps_masks_binary_and_aligned():
    data = make_synthetic(count=2, size=64, cells=6, seed=1, resize=[32, 48])
    assert data.images[0].shape == (32, 48, 1) and data.masks[0].shape == (32, 48)
    assert set(np.unique(data.masks[0])) <= {0, 1}
    assert data.images[0][..., 0][data.masks[0] == 0].mean() < data.images[0][..., 0][data.masks[0] == 1].mean()


def test_unsupported_format_names_the_file(folder_data):
    images, masks = folder_data
    (images / "s0.png").rename(images / "s0.gif")
    (masks / "s0.png").rename(masks / "s0.gif")
    from segexp.data.images import read_image

    with pytest.raises(DataError, match=r"s0\.gif: unsupported format '\.gif'"):
        read_image(images / "s0.gif")


@pytest.mark.parametrize("dtype, shape, channels", [(np.uint8, (9, 7), 1), (np.uint8, (9, 7), 3),
                                                    (np.uint16, (9, 7), 1), (np.uint8, (9, 7, 3), 3)])
def test_raw_pixels_recovers_a_slice_as_its_file_held_it_from_the_normalized_one(dtype, shape, channels):
    from segexp.data.images import raw_pixels, to_channels, to_unit_float

    raw = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    normalized = to_channels(to_unit_float(raw), channels)  # as the loaders prepare a slice
    recovered = raw_pixels(normalized, pixel_digest(raw))
    assert recovered is not None and recovered.dtype == dtype and np.array_equal(recovered, raw)
    # percentile normalization loses the file's values: no reading gives the digest
    assert raw_pixels(to_channels(to_unit_float(raw, "percentile"), channels), pixel_digest(raw)) is None
