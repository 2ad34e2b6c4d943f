"""Object detection transfer (`vito eval detect`): COCO and LVIS readers, views, the detector, the fine-tune
recipe, COCO/LVIS AP through faster-coco-eval, pictures."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.dense.detection import detect  # noqa: F401
