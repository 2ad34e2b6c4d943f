"""Semantic segmentation transfer (`vito eval segment`): PASCAL VOC and ADE20K readers, training crops,
heads, the fine-tune recipes, mmseg's mIoU, pictures."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.dense.segmentation import segment  # noqa: F401
