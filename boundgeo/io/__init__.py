"""Reading data and what users bring: the bundled and on-disk datasets (`load_dataset`),
image folders (`ImageFolder`) and checkpoints (`load_weights`)."""

from .datasets import load_dataset
from .weights import load_weights

__all__ = ["ImageFolder", "load_dataset", "load_weights"]


def __getattr__(name: str):
    # ImageFolder subclasses torchvision's DatasetFolder: import torchvision only when asked for
    if name == "ImageFolder":
        from .images import ImageFolder

        return ImageFolder
    raise AttributeError(f"module 'boundgeo.io' has no attribute {name!r}")
