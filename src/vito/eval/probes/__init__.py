"""Classifiers on frozen features: weighted kNN (`vito eval knn`) and the linear probe (`vito eval linear`)."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.probes import knn, linear  # noqa: F401
