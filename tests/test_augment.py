"""Every augmentation recipe moves image and mask together and keeps masks binary."""

from __future__ import annotations

import numpy as np
import pytest

from segexp.samples.augment import CropSampler
from segexp.config.files import config_groups
from segexp.config.instantiate import instantiate


def pipeline(make_cfg, recipe: str):
    """Returns the recipe's albumentations pipeline, built as train() builds it."""
    return instantiate(make_cfg(f"aug={recipe}").aug, _convert_="all")


def blobs(size: int = 96, seed: int = 0):
    """Returns (image, mask) where the mask is derivable from the image: bright = 1."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(6):
        y, x, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(6, 14))]
        yy, xx = np.ogrid[:size, :size]
        mask[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = 1
    image = np.where(mask == 1, 0.85, 0.15).astype(np.float32)[..., None]
    return image, mask


@pytest.mark.parametrize("recipe", config_groups()["aug"])
def test_recipe_keeps_image_and_mask_aligned_and_binary(make_cfg, recipe):
    image, mask = blobs()
    weights = np.where(mask == 1, 1.0, 5.0).astype(np.float32)  # weights must travel with the mask
    sampler = CropSampler([image], [mask], pipeline(make_cfg, recipe), crop_size=64, seed=0, weights=[weights])
    for index in range(12):
        x, y = sampler(index)
        assert x.shape == (64, 64, 1) and y.shape == (64, 64, 2)
        assert set(np.unique(y[..., 0])) <= {0.0, 1.0}
        assert np.array_equal(y[..., 1] == 5.0, y[..., 0] == 0)
        agreement = np.mean((x[..., 0] > 0.5) == (y[..., 0] == 1))
        assert agreement > 0.97, f"{recipe} sample {index}: image and mask disagree on {1 - agreement:.1%}"


def test_heavy_recipe_actually_changes_the_crop(make_cfg):
    image, mask = blobs()
    plain = CropSampler([image], [mask], pipeline(make_cfg, "none"), 64, seed=0)
    heavy = CropSampler([image], [mask], pipeline(make_cfg, "heavy"), 64, seed=0)
    changed = [not np.array_equal(plain(i)[0], heavy(i)[0]) for i in range(8)]
    assert sum(changed) >= 6


def test_samples_are_a_pure_function_of_seed_and_index(make_cfg):
    image, mask = blobs()
    transforms = pipeline(make_cfg, "heavy")
    first, second = CropSampler([image], [mask], transforms, 64, seed=7), CropSampler([image], [mask], transforms, 64, seed=7)
    order = [5, 1, 3]
    a = [first(i)[0] for i in order]
    b = [second(i)[0] for i in reversed(order)][::-1]  # other call order, same samples
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(first(1)[0], CropSampler([image], [mask], transforms, 64, seed=8)(1)[0])


def test_the_pipeline_is_copied_once_per_concurrent_call_and_reused(make_cfg, monkeypatch):
    image, mask = blobs()
    sampler = CropSampler([image], [mask], pipeline(make_cfg, "heavy"), 64, seed=0)
    copies = []
    real_copy = sampler.copy_pipeline
    monkeypatch.setattr(sampler, "copy_pipeline", lambda: copies.append(1) or real_copy())
    for index in range(20):
        sampler(index)
    assert len(copies) == 1  # one call at a time: one copy, reused
    assert sampler._template.transforms[0] is not sampler._idle.get_nowait().transforms[0]
