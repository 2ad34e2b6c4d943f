"""The pretraining loop and what it needs: optimiser and schedules, checkpoints, distributed set-up."""
