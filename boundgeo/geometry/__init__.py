"""What the boundary normals and perturbations say about the boundary: their spectrum
(`spectrum`, `alignment`), fooling inside subspaces (`subspace_fooling`,
`adversarial_dimension`), margins inside subspaces (`subspace_margins`), curvature
(`boundary_curvature`, `curvature_fooling`) and the four robustness categories
(`robustness_profile`, `categorize`)."""

from .categories import Category, RobustnessProfile, categorize, robustness_profile
from .curvature import (
    Curvature,
    CurvatureFooling,
    boundary_curvature,
    curvature_fooling,
)
from .margins import SubspaceMargins, dct_bands, dct_basis, subspace_margins
from .spectral import Spectrum, alignment, spectrum
from .subspace import (
    AdversarialDimension,
    SubspaceFooling,
    adversarial_dimension,
    subspace_fooling,
)

__all__ = [
    "Category",
    "RobustnessProfile",
    "categorize",
    "robustness_profile",
    "Curvature",
    "CurvatureFooling",
    "boundary_curvature",
    "curvature_fooling",
    "SubspaceMargins",
    "dct_bands",
    "dct_basis",
    "subspace_margins",
    "Spectrum",
    "alignment",
    "spectrum",
    "AdversarialDimension",
    "SubspaceFooling",
    "adversarial_dimension",
    "subspace_fooling",
]
