"""segexp: configuration-driven experiments for image segmentation."""

__version__ = "0.1.0"
