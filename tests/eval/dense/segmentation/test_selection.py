"""The held-out images the segmentation lr is chosen on: BYOL's 2,119 of train_aug, never a val image, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from vito.errors import DataError
from vito.eval.dense.segmentation.data import VOC_CLASSES, Item, SegmentationDataset
from vito.eval.dense.segmentation.selection import heldout_count, hold_out


def _split(name: str, ids: list[str]) -> SegmentationDataset:
    items = tuple(Item(i, Path(f"{i}.jpg"), Path(f"{i}.png")) for i in ids)
    return SegmentationDataset("voc", Path("."), name, items, VOC_CLASSES, reduce_zero_label=False)


def test_a_full_train_aug_gives_up_2119_images_none_of_them_val() -> None:
    val = _split("val", [f"v{i:04d}" for i in range(1449)])
    train = _split("trainaug", [f"t{i:05d}" for i in range(10_582)] + [item.id for item in val.items[:30]])
    held = hold_out(train, val, seed=0)
    ids = set(held.ids)
    assert len(ids) == 2119 and not ids & {item.id for item in val.items}  # disjoint from val
    fit = {item.id for item in held.fit.items}
    assert len(fit) == 10_582 + 30 - 2119 and not fit & ids and fit | ids == {item.id for item in train.items}
    assert held.ids == [item.id for item in train.items if item.id in ids]  # in split order
    assert hold_out(train, val, seed=0).ids == held.ids  # seeded: the same draw again
    assert len(ids ^ set(hold_out(train, val, seed=1).ids)) > 1000  # another seed, other images
    assert held.heldout.split == "heldout" and held.fit.split == "trainaug without heldout"
    assert held.identity()["images"] == 2119 and held.identity()["seed"] == 0
    assert held.identity() != hold_out(train, val, seed=1).identity()


def test_a_smaller_training_split_gives_up_the_same_fraction() -> None:
    assert heldout_count(10_582) == 2119 and heldout_count(20_210) == 2119
    assert heldout_count(1000) == 200 and heldout_count(7) == 1 and heldout_count(1) == 1  # 1000 * 2119 / 10582
    train, val = _split("trainaug", ["a", "b", "c", "d", "e", "f", "g"]), _split("val", ["a", "b"])
    held = hold_out(train, val, seed=0)
    assert len(held.ids) == 1 and held.ids[0] in "cdefg" and len(held.fit.items) == 6


def test_nothing_to_hold_out_or_nothing_left_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="every image of voc trainaug is also in val.*--lr-selection val"):
        hold_out(_split("trainaug", ["a", "b"]), _split("val", ["b", "a"]), seed=0)
    with pytest.raises(DataError, match="holding out 1 leaves none to fine-tune on"):
        hold_out(_split("trainaug", ["a"]), _split("val", ["b"]), seed=0)
