"""Attacks that find adversarial perturbations: per-input DeepFool (`deepfool`, and
`boundary_normals` over a whole dataset, resumable) and universal perturbations
(`universal_perturbation`, `fooling_rate`, `transfer_matrix`)."""

from .boundary import BoundaryPoints, boundary_normals, deepfool
from .universal import (
    PerturbedExamples,
    UniversalPerturbation,
    fooling_rate,
    perturbed_examples,
    transfer_matrix,
    universal_perturbation,
)

__all__ = [
    "BoundaryPoints",
    "boundary_normals",
    "deepfool",
    "PerturbedExamples",
    "UniversalPerturbation",
    "fooling_rate",
    "perturbed_examples",
    "transfer_matrix",
    "universal_perturbation",
]
