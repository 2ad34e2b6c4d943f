"""The evaluation harness every benchmark shares: the registry, the Result and its writers, running one
evaluation, encoders (loading, naming), image inputs, cached features and ImageNet classifier heads."""
