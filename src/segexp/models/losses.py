"""Segmentation losses as one registered Keras loss: cross-entropy, focal, Dice, clDice, class weights and
border weights combined.

y_true is (B, H, W, 1) with the class index of each pixel (binary: 1 = white; IGNORE = unlabelled), or
(B, H, W, 2) with the U-Net border weight map as the second channel (see weightmap.py). y_pred is the
probability of class 1 (B, H, W, 1) for two classes, or of each class (B, H, W, K) for K > 2 (softmax).
An affinity model (`affinities` = C channels) has y_true (B, H, W, 2C): the C affinity targets, then the C masks
of the pairs that count (data/affinities.py), and y_pred (B, H, W, C) sigmoid affinities.
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-6
IGNORE = 255.0  # segexp.data.classes.IGNORE: unlabelled pixels carry no loss


def split_target(y_true):
    """Returns (mask, pixel weights); weights are ones when y_true carries none."""
    mask = y_true[..., :1]
    weights = y_true[..., 1:2] if y_true.shape[-1] == 2 else ops.ones_like(mask)
    return mask, weights


def labelled(mask):
    """Returns (mask with unlabelled pixels set to class 0, 1.0 where labelled else 0.0)."""
    valid = ops.cast(ops.not_equal(mask, IGNORE), mask.dtype)
    return mask * valid, valid


def class_weight_map(mask, class_weights):
    """Returns each pixel's weight by its class (mask holds class indices)."""
    table = ops.convert_to_tensor(class_weights, dtype=mask.dtype)
    return ops.take(table, ops.cast(mask, "int32"))


def categorical_terms(index, prob, valid, classes: int, focal_gamma: float):
    """Returns (one-hot truth (B, H, W, K) zero where unlabelled, per-pixel cross-entropy (B, H, W, 1))."""
    truth = ops.one_hot(ops.cast(index[..., 0], "int32"), classes, dtype=prob.dtype) * valid
    p_true_class = ops.sum(truth * ops.clip(prob, EPSILON, 1.0), axis=-1, keepdims=True)
    ce = -ops.log(ops.maximum(p_true_class, EPSILON)) * valid
    if focal_gamma:
        ce = ce * ops.power(1.0 - p_true_class, focal_gamma)
    return truth, ce


def soft_dice_per_class(truth, prob, valid, smooth: float = 1.0):
    """Returns (B, K) soft Dice of each class over the labelled pixels."""
    prob = prob * valid
    axes = (1, 2)
    intersection = ops.sum(truth * prob, axis=axes)
    total = ops.sum(truth, axis=axes) + ops.sum(prob, axis=axes)
    return (2.0 * intersection + smooth) / (total + smooth)


def pixel_bce(mask, prob, focal_gamma: float = 0.0):
    """Returns per-pixel binary cross-entropy, focal-modulated by (1 - p_t)^gamma when gamma > 0."""
    prob = ops.clip(prob, EPSILON, 1.0 - EPSILON)
    bce = -(mask * ops.log(prob) + (1.0 - mask) * ops.log(1.0 - prob))
    if focal_gamma:
        p_true_class = mask * prob + (1.0 - mask) * (1.0 - prob)
        bce = bce * ops.power(1.0 - p_true_class, focal_gamma)
    return bce


def soft_dice_loss(mask, prob, foreground: int, smooth: float = 1.0, valid=None):
    """Returns 1 - soft Dice per sample, on the class whose mask value is `foreground`, over the `valid`
    (labelled) pixels if given."""
    if foreground == 0:
        mask, prob = 1.0 - mask, 1.0 - prob
    if valid is not None:
        mask, prob = mask * valid, prob * valid
    axes = (1, 2, 3)
    intersection = ops.sum(mask * prob, axis=axes)
    total = ops.sum(mask, axis=axes) + ops.sum(prob, axis=axes)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def soft_erode(x):
    """Min over a 3x1 and a 1x3 neighbourhood: a differentiable erosion (Shit et al., clDice, CVPR 2021)."""
    return -ops.maximum(ops.max_pool(-x, (3, 1), strides=1, padding="same"),
                        ops.max_pool(-x, (1, 3), strides=1, padding="same"))


def soft_dilate(x):
    return ops.max_pool(x, 3, strides=1, padding="same")


def soft_skeleton(x, iterations: int):
    """clDice's soft skeleton: what each of `iterations` erosions leaves that an opening would remove. A
    structure up to 2 * iterations pixels thick is reduced to its centreline."""
    skeleton = ops.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = ops.relu(x - soft_dilate(soft_erode(x)))
        skeleton = skeleton + ops.relu(delta - skeleton * delta)
    return skeleton


def soft_cldice_loss(mask, prob, foreground: int, iterations: int, smooth: float = 1.0):
    """Returns 1 - soft clDice per sample on the foreground class: the harmonic mean of how much of the
    predicted skeleton lies in the true mask (topology precision) and of the true skeleton in the prediction
    (topology sensitivity). A membrane broken or bridged by a few pixels costs much more than in Dice."""
    if foreground == 0:
        mask, prob = 1.0 - mask, 1.0 - prob
    axes = (1, 2, 3)
    skeleton_pred, skeleton_true = soft_skeleton(prob, iterations), soft_skeleton(mask, iterations)
    precision = (ops.sum(skeleton_pred * mask, axis=axes) + smooth) / (ops.sum(skeleton_pred, axis=axes) + smooth)
    sensitivity = (ops.sum(skeleton_true * prob, axis=axes) + smooth) / (ops.sum(skeleton_true, axis=axes) + smooth)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)


@keras.saving.register_keras_serializable(package="segexp")
class SegmentationLoss(keras.losses.Loss):
    """bce * (weighted, optionally focal) cross-entropy + dice * soft Dice + cldice * soft clDice, per sample.

    Two classes (one sigmoid output): binary cross-entropy, Dice and clDice of class `foreground`. K > 2
    classes (softmax): categorical cross-entropy and the mean soft Dice over `dice_classes` (default: all).
    `class_weights` (one per class) weigh each pixel's cross-entropy by its true class; unlabelled pixels
    (IGNORE) add nothing to any term. The cross-entropy is the mean over all pixels of a crop, unlabelled ones
    counting zero (Keras' sample-weight convention), so a crop's loss shrinks with its unlabelled share and a
    crop without labels adds nothing.
    """

    def __init__(self, bce: float = 1.0, dice: float = 0.0, focal_gamma: float = 0.0, foreground: int = 0,
                 cldice: float = 0.0, skeleton_iterations: int = 10, classes: int = 2,
                 class_weights: list[float] | None = None, dice_classes: list[int] | None = None,
                 affinities: int = 0, name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce, self.dice, self.focal_gamma, self.foreground = bce, dice, focal_gamma, foreground
        self.cldice, self.skeleton_iterations = cldice, skeleton_iterations
        self.classes = classes
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.dice_classes = None if dice_classes is None else [int(c) for c in dice_classes]
        self.affinities = int(affinities)

    def call(self, y_true, y_pred):
        if self.affinities:
            return self.affinity_loss(ops.cast(y_true, y_pred.dtype), y_pred)
        mask, weights = split_target(ops.cast(y_true, y_pred.dtype))
        mask, valid = labelled(mask)
        weights = weights * valid
        if self.class_weights is not None:
            weights = weights * class_weight_map(mask, self.class_weights)
        if self.classes > 2:
            return self.categorical(mask, y_pred, weights, valid)
        loss = 0.0
        if self.bce:
            loss = loss + self.bce * ops.mean(weights * pixel_bce(mask, y_pred, self.focal_gamma), axis=(1, 2, 3))
        if self.dice:
            loss = loss + self.dice * soft_dice_loss(mask, y_pred, self.foreground, valid=valid)
        if self.cldice:
            loss = loss + self.cldice * soft_cldice_loss(mask, y_pred, self.foreground, self.skeleton_iterations)
        return loss

    def affinity_loss(self, y_true, y_pred):
        """Per channel, as for a boundary map: BCE over the pairs that count (Keras' sample-weight mean) and soft
        Dice of the cuts, the minority class as membranes are in a boundary map; both averaged over channels."""
        channels = self.affinities
        same, valid = y_true[..., :channels], y_true[..., channels: 2 * channels]
        loss = 0.0
        if self.bce:
            loss = loss + self.bce * ops.mean(valid * pixel_bce(same, y_pred, self.focal_gamma), axis=(1, 2, 3))
        if self.dice:
            cut, predicted_cut = (1.0 - same) * valid, (1.0 - y_pred) * valid
            intersection = ops.sum(cut * predicted_cut, axis=(1, 2))
            total = ops.sum(cut, axis=(1, 2)) + ops.sum(predicted_cut, axis=(1, 2))
            loss = loss + self.dice * (1.0 - ops.mean((2.0 * intersection + 1.0) / (total + 1.0), axis=1))
        return loss

    def categorical(self, index, prob, weights, valid):
        truth, ce = categorical_terms(index, prob, valid, self.classes, self.focal_gamma)
        loss = 0.0
        if self.bce:
            loss = loss + self.bce * ops.mean(weights * ce, axis=(1, 2, 3))
        if self.dice:
            dice = soft_dice_per_class(truth, prob, valid)
            if self.dice_classes is not None:
                dice = ops.take(dice, self.dice_classes, axis=1)
            loss = loss + self.dice * (1.0 - ops.mean(dice, axis=1))
        return loss

    def get_config(self):
        return {**super().get_config(), "bce": self.bce, "dice": self.dice, "focal_gamma": self.focal_gamma,
                "foreground": self.foreground, "cldice": self.cldice, "skeleton_iterations": self.skeleton_iterations,
                "classes": self.classes, "class_weights": self.class_weights, "dice_classes": self.dice_classes,
                "affinities": self.affinities}
