"""Self-supervised pretraining (VITO, MoCLR): the training loop, LARS and its schedules, the device feed,
resuming a run, and exporting its backbone."""
