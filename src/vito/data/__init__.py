"""Videos in, augmented views out: decoding, temporal sampling, augmentation, sources and shards."""
