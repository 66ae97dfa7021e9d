"""boundgeo: the geometry of a neural network's decision boundaries.

Boundary normals by batched DeepFool, their spectrum against random directions, universal
adversarial perturbations and robustness categories, after Moosavi-Dezfooli et al.,
"Universal adversarial perturbations" (CVPR 2017, arXiv 1610.08401).

>>> import boundgeo as bg
>>> x, y = bg.load_dataset("digits")
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import attacks, distributed, geometry, io, toys, zoo
from ._errors import BoundgeoError
from .attacks import *  # noqa: F403  (each subpackage's __all__ lists what it exports)
from .classifier import Classifier, as_classifier
from .geometry import *  # noqa: F403
from .io import load_dataset, load_weights  # ImageFolder: lazily, below

__all__ = [
    "__version__",
    "BoundgeoError",
    "Classifier",
    "as_classifier",
    *attacks.__all__,
    *geometry.__all__,
    "load_dataset",
    "ImageFolder",
    "load_weights",
    "attacks",
    "geometry",
    "io",
    "distributed",
    "toys",
    "zoo",
]


# modules of the first, flat layout, since grouped into attacks, geometry and io: old
# attribute paths (bg.boundary.ZERO_NORMAL) keep working, with a warning
_MOVED = {"boundary": "attacks.boundary", "universal": "attacks.universal", "categories": "geometry.categories",
          "curvature": "geometry.curvature", "margins": "geometry.margins", "subspace": "geometry.subspace",
          "datasets": "io.datasets"}


def __getattr__(name: str):
    # ImageFolder subclasses torchvision's DatasetFolder: import torchvision only when asked for
    if name == "ImageFolder":
        from .io.images import ImageFolder

        return ImageFolder
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"boundgeo.{name} moved to boundgeo.{_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(f".{_MOVED[name]}", __name__)
    raise AttributeError(f"module 'boundgeo' has no attribute {name!r}")
