"""`segexp predict`: probability maps (masks, overlays) for images of any size, from a checkpoint."""

from __future__ import annotations


def task(cfg):
    from segexp.commands.predict import predict

    predict(cfg)
