"""Classifiers on frozen features: weighted kNN (`vito eval knn`) and the linear probe (`vito eval linear`)."""
