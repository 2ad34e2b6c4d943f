"""Semantic segmentation transfer (`vito eval segment`): PASCAL VOC and ADE20K readers, training crops,
heads, the fine-tune recipes, mmseg's mIoU, pictures."""
