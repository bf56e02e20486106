"""Overlap-tile prediction and dihedral TTA, checked against whole-image predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from segexp.inference.tiling import dihedral_transforms, gaussian_window, plan_axis, predict_image, predict_tiled, predict_tta, round_up


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def sigmoid_of_first_channel(batch: np.ndarray) -> np.ndarray:
    """Pointwise model: (N, h, w, C) -> (N, h, w)."""
    return 1 / (1 + np.exp(-batch[..., 0]))


def mean_filter_model(size: int):
    """Translation-equivariant, non-pointwise model: a size x size box filter applied to each tile on its own."""

    def predict_batch(batch: np.ndarray) -> np.ndarray:
        # size 1 along N: tiles must not see each other.
        return uniform_filter(batch[..., 0], size=(1, size, size), mode="reflect")[..., np.newaxis]

    return predict_batch


def reflect_padded_reference(predict_2d, image: np.ndarray, radius: int) -> np.ndarray:
    """Whole-image prediction with the same np.pad reflect context at the image border that tiling uses."""
    padded = np.pad(image, radius, mode="reflect")
    return predict_2d(padded)[radius:-radius, radius:-radius]


def far_from_tile_edges(length: int, tile: int, overlap: int, multiple: int, radius: int) -> np.ndarray:
    """Boolean mask of the positions along one axis that are > radius away from the edges of every tile covering them."""
    plan = plan_axis(length, tile, overlap, multiple)
    positions = np.arange(length) + plan.pad_before
    safe = np.ones(length, dtype=bool)
    for start in plan.starts:
        inside = (positions >= start) & (positions < start + plan.tile)
        near_edge = (positions - start < radius) | (start + plan.tile - 1 - positions < radius)
        safe &= ~(inside & near_edge)
    return safe


# --- tile grid -------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 37, 191, 192, 256, 300, 517, 700])
@pytest.mark.parametrize("tile, overlap, multiple", [(256, 64, 1), (256, 64, 16), (100, 30, 32), (64, 0, 8)])
def test_plan_axis_covers_the_image_on_a_regular_grid(length, tile, overlap, multiple):
    plan = plan_axis(length, tile, overlap, multiple)
    padded_length = plan.pad_before + length + plan.pad_after

    assert plan.tile % multiple == 0
    assert plan.tile <= round_up(tile, multiple)
    assert plan.starts[0] == 0
    assert plan.starts[-1] + plan.tile == padded_length  # last tile flush with the padded edge
    assert plan.pad_before == overlap // 2 and plan.pad_after >= overlap // 2
    if len(plan.starts) > 1:
        assert set(np.diff(plan.starts)) == {plan.tile - overlap}
    else:
        # A small axis gets one tile of its padded size rounded up, not a full tile.
        assert plan.tile == round_up(length + 2 * (overlap // 2), multiple)


def test_plan_axis_rejects_an_overlap_that_leaves_no_stride():
    with pytest.raises(ValueError, match="overlap"):
        plan_axis(500, tile=64, overlap=64)


def test_gaussian_window_peaks_in_the_centre_and_stays_positive_at_the_edges():
    window = gaussian_window(64, 48)

    assert window.shape == (64, 48)
    assert window.max() == pytest.approx(1.0, abs=1e-3)
    assert window[0, 0] > 0
    assert window[32, 24] > 100 * window[0, 24] > 0


# --- tiled prediction ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(512, 512), (300, 517), (37, 41), (1, 1), (5, 700)])
@pytest.mark.parametrize("channels", [None, 3])
def test_tiling_a_pointwise_model_equals_the_whole_image_prediction(shape, channels):
    image = random_image(shape if channels is None else (*shape, channels)) * 8 - 4
    whole = sigmoid_of_first_channel(image[np.newaxis, ..., np.newaxis] if channels is None else image[np.newaxis])[0]

    tiled = predict_tiled(sigmoid_of_first_channel, image, tile=256, overlap=64, batch_size=4, multiple=16)

    assert tiled.shape == shape
    assert tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


def softmax_of_channels(batch: np.ndarray) -> np.ndarray:
    """Pointwise K-class model: (N, h, w, C) -> (N, h, w, C) class probabilities."""
    exp = np.exp(batch - batch.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("tta", [False, True])
def test_tiling_a_pointwise_class_model_keeps_every_class_channel(tta):
    image = random_image((70, 90, 3)) * 8 - 4

    probs = predict_image(softmax_of_channels, image, tile=32, overlap=8, batch_size=4, multiple=8, tta=tta)

    assert probs.shape == (70, 90, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, softmax_of_channels(image), rtol=0, atol=1e-6)


@pytest.mark.parametrize("filter_size", [3, 9])
def test_overlap_blending_hides_the_seams_of_a_non_pointwise_model(filter_size):
    image = random_image((300, 517))
    radius = filter_size // 2
    tile, overlap, multiple = 64, 16, 8
    reference = reflect_padded_reference(lambda x: uniform_filter(x, filter_size, mode="reflect"), image, radius)
    safe = np.outer(
        far_from_tile_edges(300, tile, overlap, multiple, radius),
        far_from_tile_edges(517, tile, overlap, multiple, radius),
    )

    tiled = predict_tiled(mean_filter_model(filter_size), image, tile, overlap, batch_size=8, multiple=multiple)
    abutting = predict_tiled(mean_filter_model(filter_size), image, tile, overlap=0, batch_size=8, multiple=multiple)

    error = np.abs(tiled - reference)
    assert 0.5 < safe.mean() < 1  # the mask excludes the seams but keeps most of the image
    assert error[safe].max() < 1e-6  # exact wherever some tile sees the full filter support...
    assert error.max() < 3e-3  # ...and the Gaussian weights suppress each tile's border artefacts elsewhere
    # Control: without overlap the tile borders show through, so the blending is what makes the difference.
    assert np.abs(abutting - reference).max() > 50 * error.max()


@pytest.mark.parametrize("shape", [(300, 517, 3), (37, 41), (1, 1), (5, 700, 2), (512, 512)])
@pytest.mark.parametrize("multiple, batch_size", [(1, 1), (16, 4), (32, 3)])
def test_predict_batch_gets_model_sized_tiles_in_bounded_batches(shape, multiple, batch_size):
    calls = []

    def recording_model(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        assert batch.dtype == np.float32
        return np.zeros(batch.shape[:3], dtype=np.float32)

    predict_tiled(recording_model, random_image(shape), tile=100, overlap=20, batch_size=batch_size, multiple=multiple)

    n_tiles = len(plan_axis(shape[0], 100, 20, multiple).starts) * len(plan_axis(shape[1], 100, 20, multiple).starts)
    assert sum(n for n, *_ in calls) == n_tiles
    for n, height, width, channels in calls:
        assert 1 <= n <= batch_size
        assert height % multiple == 0 and width % multiple == 0
        assert channels == (shape[2] if len(shape) == 3 else 1)


def test_predict_tiled_rejects_a_model_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match="predict_batch returned shape"):
        predict_tiled(lambda batch: batch[:, :-1, :, 0], random_image((40, 40)), tile=32, overlap=8, batch_size=4,
                      multiple=1)


# --- test-time augmentation ------------------------------------------------------------------------


def test_dihedral_transforms_are_eight_distinct_invertible_maps():
    square = np.arange(16).reshape(4, 4)  # asymmetric, so every group element moves it differently
    transforms = dihedral_transforms()

    assert len(transforms) == 8
    assert len({forward(square).tobytes() for forward, _ in transforms}) == 8
    for array in (random_image((3, 5)), random_image((3, 5, 2))):
        for forward, inverse in transforms:
            np.testing.assert_array_equal(inverse(forward(array)), array)


def test_tta_of_a_pointwise_model_equals_the_plain_prediction():
    image = random_image((45, 70, 3)) * 8 - 4

    plain = predict_image(sigmoid_of_first_channel, image, tile=32, overlap=8, batch_size=4, multiple=8, tta=False)
    augmented = predict_image(sigmoid_of_first_channel, image, tile=32, overlap=8, batch_size=4, multiple=8, tta=True)

    np.testing.assert_allclose(augmented, plain, rtol=0, atol=1e-6)


def test_tta_of_a_position_dependent_model_is_the_average_over_the_eight_views():
    image = random_image((6, 9))

    def add_horizontal_ramp(x: np.ndarray) -> np.ndarray:
        return x + np.linspace(0, 1, x.shape[1])[np.newaxis, :]

    views = [
        add_horizontal_ramp(image),
        np.rot90(add_horizontal_ramp(np.rot90(image, 1)), -1),
        np.rot90(add_horizontal_ramp(np.rot90(image, 2)), -2),
        np.rot90(add_horizontal_ramp(np.rot90(image, 3)), -3),
        np.fliplr(add_horizontal_ramp(np.fliplr(image))),
        np.fliplr(np.rot90(add_horizontal_ramp(np.rot90(np.fliplr(image), 1)), -1)),
        np.fliplr(np.rot90(add_horizontal_ramp(np.rot90(np.fliplr(image), 2)), -2)),
        np.fliplr(np.rot90(add_horizontal_ramp(np.rot90(np.fliplr(image), 3)), -3)),
    ]

    augmented = predict_tta(add_horizontal_ramp, image)

    assert np.abs(augmented - add_horizontal_ramp(image)).max() > 0.4
    np.testing.assert_allclose(augmented, np.mean(views, axis=0), atol=1e-6)
    # Each ramp direction meets its mirror image, so the position term averages to 1/2 everywhere.
    np.testing.assert_allclose(augmented, image + 0.5, atol=1e-6)


# --- a real Keras model ------------------------------------------------------------------------


def test_tiled_keras_model_matches_the_whole_image_prediction_away_from_seams():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")]
    )
    image = random_image((90, 130)) * 4 - 2
    tile, overlap, multiple = 48, 16, 16

    def predict_whole(x: np.ndarray) -> np.ndarray:
        return model(x[np.newaxis, ..., np.newaxis], training=False).numpy()[0, ..., 0]

    reference = reflect_padded_reference(predict_whole, image, radius=1)
    safe = np.outer(
        far_from_tile_edges(90, tile, overlap, multiple, 1), far_from_tile_edges(130, tile, overlap, multiple, 1)
    )

    tiled = predict_tiled(
        lambda x: model(x, training=False).numpy(), image, tile, overlap, batch_size=4, multiple=multiple
    )

    error = np.abs(tiled - reference)
    assert error[safe].max() < 1e-6
    assert error.max() < 1e-3


def tile_position_model(batch: np.ndarray) -> np.ndarray:
    """A model whose output depends on where in the tile a pixel sits and on its neighbours, with 3 classes:
    any mistake in which tile sums go where shows up in the blend."""
    ramp = np.linspace(0.0, 1.0, batch.shape[2], dtype=np.float32)[None, None, :]
    first = np.tanh(3 * uniform_filter(batch[..., 0], size=(1, 3, 3), mode="reflect") + ramp) * 0.5 + 0.5
    return np.stack([first, 1 - first, first * first], axis=-1)


@pytest.mark.parametrize("height,width,tile,overlap,batch_size,multiple", [
    (70, 90, 16, 4, 3, 4),   # several bands and column groups, the last group partial
    (100, 33, 24, 8, 1, 8),  # one tile per group
    (5, 7, 16, 4, 2, 4),     # smaller than one tile: a single band and group
    (1, 1, 8, 2, 2, 8),      # one pixel, reflected margins longer than the image
])
def test_streamed_tiles_write_the_in_memory_blend_once_per_pixel(height, width, tile, overlap, batch_size, multiple):
    from segexp.inference.stream import stream_tiled

    image = random_image((height, width, 2), seed=3)
    expected = predict_tiled(tile_position_model, image, tile, overlap, batch_size, multiple)
    written = np.full(expected.shape, np.nan, np.float32)
    times = np.zeros((height, width), int)
    reads = []

    def read(rows: slice, cols: slice) -> np.ndarray:
        reads.append((rows.stop - rows.start) * (cols.stop - cols.start))
        return image[rows, cols]

    def write(top: int, left: int, block: np.ndarray) -> None:
        written[top:top + block.shape[0], left:left + block.shape[1]] = block
        times[top:top + block.shape[0], left:left + block.shape[1]] += 1

    stream_tiled(tile_position_model, read, height, width, write, tile, overlap, batch_size, multiple)
    assert times.min() == times.max() == 1
    np.testing.assert_array_equal(written, expected)  # the same sums in the same order: bit for bit
    assert max(reads) <= round_up(tile, multiple) ** 2  # one tile's box at a time, never the image


def test_a_log_gets_one_progress_line_per_update():
    import io

    from segexp.inference.stream import progress

    log = io.StringIO()
    bar = progress(3, "predict", "tile", log)
    bar.mininterval = bar.maxinterval = 0  # every update shows; LOG_INTERVAL keeps a real log short
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 3
    assert lines[-1].startswith("predict: 100%") and "3/3" in lines[-1]
