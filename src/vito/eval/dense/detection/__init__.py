"""Object detection transfer (`vito eval detect`): COCO and LVIS readers, views, the detector, the fine-tune
recipe, COCO/LVIS AP through faster-coco-eval, pictures."""
