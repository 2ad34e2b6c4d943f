"""Encoders, attention pooling, heads and the online/target VITO network."""
