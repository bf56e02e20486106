"""U-Net (Ronneberger et al. 2015) as a Keras 3 functional model.

`build_unet(...)` with conf/model/unet.yaml (depth 4, 64 filters, dropout 0.5, upsample + 2x2 conv)
is the seed example's network (zhixuhao/unet, ~31M parameters). Inputs of any height and width
work: the model pads to a multiple of 2**depth and crops its output back.
"""

from __future__ import annotations

import keras
from keras import layers, ops

PACKAGE = "segexp"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(layers.Layer):
    """Zero-pads height and width (bottom/right) up to a multiple of `multiple`."""

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        # non-negative operands only: exported to ONNX, a modulo of a negative number truncates (C's fmod)
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        round_up = lambda n: None if n is None else -(-n // self.multiple) * self.multiple  # noqa: E731
        return (input_shape[0], round_up(input_shape[1]), round_up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropLike(layers.Layer):
    """Crops x to the height and width of a reference tensor (undoes PadToMultiple)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


# Keras' default 0.99 needs ~500 steps to forget the initial statistics, longer than a short
# CPU run: validation would see untrained moving averages and predict a constant.
BN_MOMENTUM = 0.9


def conv_block(x, filters: int, batch_norm: bool, activation: str, name: str):
    """Two 3x3 convolutions, each optionally batch-normalized."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        x = layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def upsample(x, filters: int, mode: str, activation: str, name: str):
    """Doubles the resolution: learned transpose conv, bilinear resize, or the seed's upsample + 2x2 conv."""
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
    if mode == "bilinear":
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
        return layers.Conv2D(filters, 1, name=f"{name}_up_proj")(x)
    # upsample_conv (schema.Upsampling allows no other value)
    x = layers.UpSampling2D(2, name=f"{name}_up")(x)
    return layers.Conv2D(filters, 2, padding="same", activation=activation,
                         kernel_initializer="he_normal", name=f"{name}_up_conv")(x)


def build_unet(
    *,
    depth: int,
    base_filters: int,
    batch_norm: bool,
    dropout: float,
    dropout_levels: int,
    upsampling: str,
    activation: str,
    head_filters: int,
    channels: int,
    outputs: int = 1,
) -> keras.Model:
    """Returns a U-Net mapping (B, H, W, channels) images to (B, H, W, 1) probabilities of class 1 (sigmoid:
    two classes, white for ISBI) or, with `outputs` = K > 1, (B, H, W, K) class probabilities (softmax).
    `channels` and `outputs` come from the data; every other argument from the `model` config group."""
    inputs = keras.Input((None, None, channels), name="image")
    x = PadToMultiple(2**depth, name="pad")(inputs)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, batch_norm, activation, f"enc{level}")
        if dropout and level >= depth - dropout_levels + 1:  # the deepest levels, counting the bottleneck
            x = layers.Dropout(dropout, name=f"enc{level}_dropout")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, batch_norm, activation, "bottleneck")
    if dropout and dropout_levels >= 1:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = upsample(x, filters, upsampling, activation, f"dec{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level], x])
        x = conv_block(x, filters, batch_norm, activation, f"dec{level}")
    if head_filters:  # the seed's extra 3x3 conv before the classifier
        x = layers.Conv2D(head_filters, 3, padding="same", activation=activation,
                          kernel_initializer="he_normal", name="head")(x)
    # float32 output keeps the sigmoid/softmax and the loss numerically safe under mixed precision
    x = layers.Conv2D(outputs, 1, activation="sigmoid" if outputs == 1 else "softmax", dtype="float32",
                      name="probability")(x)
    outputs = CropLike(name="crop", dtype="float32")(x, inputs)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{base_filters}")
