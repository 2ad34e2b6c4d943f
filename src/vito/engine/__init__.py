"""What every training loop shares, written once: run folders and their lock, stop signals and the stop
agreement, checkpoints, distributed set-up and gathers, run files (config, metrics, TensorBoard), progress,
non-finite checks, precision, and the one fine-tune loop. Imports nothing above it (no config, data or eval)."""
