"""The shared segmentation samples arranged as the datasets ship (symlinks in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

VOC_IDS = ("2007_000033", "2007_000129")
ADE_IDS = ("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003")
CROP_KEYS = (0, 8, 20, 60, 166, 293, 294, 582)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def build_voc(shared: Path, tmp: Path, splits: dict[str, tuple[str, ...]] | None = None) -> Path:
    """``tmp/VOCdevkit/VOC2012`` with the two real images and masks; split lists default to val = both ids."""
    source = shared / "segmentation" / "voc2012"
    base = tmp / "VOCdevkit" / "VOC2012"
    for i in VOC_IDS:
        _link(source / "JPEGImages" / f"{i}.jpg", base / "JPEGImages" / f"{i}.jpg")
        _link(source / "SegmentationClass" / f"{i}.png", base / "SegmentationClass" / f"{i}.png")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in (splits or {"val": VOC_IDS}).items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return tmp / "VOCdevkit"


def build_ade20k(shared: Path, tmp: Path, folders: tuple[str, ...] = ("validation",)) -> Path:
    """``tmp/ADEChallengeData2016`` with the three real images and annotations in each of ``folders``."""
    source = shared / "segmentation" / "ade20k"
    base = tmp / "ADEChallengeData2016"
    for folder in folders:
        for i in ADE_IDS:
            _link(source / "images" / f"{i}.jpg", base / "images" / folder / f"{i}.jpg")
            _link(source / "annotations" / f"{i}.png", base / "annotations" / folder / f"{i}.png")
    _link(source / "objectInfo150.csv", base / "objectInfo150.csv")
    return base
