"""Robustness of ImageNet classifiers: ImageNet-A, ImageNet-Vid-Robust and 3D common corruptions (3DCC)."""
