"""Robustness of ImageNet classifiers: ImageNet-A, ImageNet-Vid-Robust and 3D common corruptions (3DCC)."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.robustness import imagenet_3dcc, imagenet_a, imagenet_vid_robust  # noqa: F401
