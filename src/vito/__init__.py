"""vito: self-supervised video pretraining (VITO) and an evaluation suite for the representations it learns."""

__version__ = "0.1.0"
