"""Evaluations of frozen or fine-tuned encoders, each matching its reference implementation."""
