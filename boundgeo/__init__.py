"""boundgeo: the geometry of a neural network's decision boundaries.

Boundary normals by batched DeepFool, their spectrum against random directions, universal
adversarial perturbations and robustness categories, after Moosavi-Dezfooli et al.,
"Universal adversarial perturbations" (CVPR 2017, arXiv 1610.08401).

>>> import boundgeo as bg
>>> x, y = bg.load_dataset("digits")
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._errors import BoundgeoError
from .boundary import BoundaryPoints, boundary_normals, deepfool
from .categories import Category, RobustnessProfile, categorize, robustness_profile
from .classifier import Classifier, as_classifier
from .curvature import Curvature, CurvatureFooling, boundary_curvature, curvature_fooling
from .datasets import load_dataset
from .io import load_weights
from .margins import SubspaceMargins, dct_bands, dct_basis, subspace_margins
from .spectrum import Spectrum, alignment, spectrum
from .subspace import AdversarialDimension, SubspaceFooling, adversarial_dimension, subspace_fooling
from .universal import (
    PerturbedExamples,
    UniversalPerturbation,
    fooling_rate,
    perturbed_examples,
    transfer_matrix,
    universal_perturbation,
)
from . import distributed, toys, zoo

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


def __getattr__(name: str):
    # ImageFolder subclasses torchvision's DatasetFolder: import torchvision only when asked for
    if name == "ImageFolder":
        from .io.images import ImageFolder

        return ImageFolder
    raise AttributeError(f"module 'boundgeo' has no attribute {name!r}")
