"""boundgeo: the geometry of a neural network's decision boundaries.

Boundary normals by batched DeepFool, their spectrum against random directions, universal
adversarial perturbations and robustness categories, after Moosavi-Dezfooli et al.,
"Universal adversarial perturbations" (CVPR 2017, arXiv 1610.08401).

>>> import boundgeo as bg
>>> x, y = bg.load_dataset("digits")
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import distributed, toys, zoo
from ._errors import BoundgeoError
from .attacks.boundary import BoundaryPoints, boundary_normals, deepfool
from .attacks.universal import (
    PerturbedExamples,
    UniversalPerturbation,
    fooling_rate,
    perturbed_examples,
    transfer_matrix,
    universal_perturbation,
)
from .classifier import Classifier, as_classifier
from .geometry.categories import (
    Category,
    RobustnessProfile,
    categorize,
    robustness_profile,
)
from .geometry.curvature import (
    Curvature,
    CurvatureFooling,
    boundary_curvature,
    curvature_fooling,
)
from .geometry.margins import SubspaceMargins, dct_bands, dct_basis, subspace_margins
from .geometry.spectral import Spectrum, alignment, spectrum
from .geometry.subspace import (
    AdversarialDimension,
    SubspaceFooling,
    adversarial_dimension,
    subspace_fooling,
)
from .io import load_dataset, load_weights

__all__ = [
    "__version__",
    "BoundgeoError",
    "Category",
    "RobustnessProfile",
    "categorize",
    "robustness_profile",
    "BoundaryPoints",
    "boundary_normals",
    "deepfool",
    "Classifier",
    "as_classifier",
    "Curvature",
    "boundary_curvature",
    "CurvatureFooling",
    "curvature_fooling",
    "load_dataset",
    "ImageFolder",
    "load_weights",
    "SubspaceMargins",
    "dct_basis",
    "dct_bands",
    "subspace_margins",
    "Spectrum",
    "spectrum",
    "alignment",
    "SubspaceFooling",
    "subspace_fooling",
    "AdversarialDimension",
    "adversarial_dimension",
    "PerturbedExamples",
    "UniversalPerturbation",
    "perturbed_examples",
    "fooling_rate",
    "transfer_matrix",
    "universal_perturbation",
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
