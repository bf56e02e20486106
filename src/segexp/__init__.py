"""segexp: configuration-driven experiments for image segmentation."""

import os

# albumentations asks PyPI for a newer release each time it is imported (an HTTPS request with a 2-s timeout, in
# every training process and sweep worker); set NO_ALBUMENTATIONS_UPDATE=0 to have that check
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
