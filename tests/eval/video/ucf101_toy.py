"""A tiny UCF-101 layout made of the shared sample clip: two classes, split files as the official ones."""

from __future__ import annotations

from pathlib import Path


def two_classes_of_one_clip(tmp_path: Path, shared_data: Path, extra_test_line: str = "") -> Path:
    """UCF-101 in TMP/videos with two classes of one video each, both the one real clip; the split files (CRLF, as
    the official ones) in the returned folder, listing both videos for training and testing."""
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n")
    for name in ("ApplyEyeMakeup", "Archery"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        (tmp_path / "videos" / name / f"v_{name}_g01_c01.avi").symlink_to(shared_data / "ucf101" / "clips" / "test.avi")
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\nArchery/v_Archery_g01_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n" + extra_test_line)
    return splits


def two_classes(tmp_path: Path, shared_data: Path) -> list[str]:
    """`vito eval ucf101` arguments (all but --out) for the two classes: 3 tiny steps of the temporal head and
    classifier (frozen: the fine-tune's whole-model steps are tested with segmentation's; vito-v1: one clip of each
    video per epoch, so an epoch is one step)."""
    splits = two_classes_of_one_clip(tmp_path, shared_data)
    return ["eval", "ucf101", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--root",
            str(tmp_path / "videos"), "--splits", str(splits), "--epochs", "3", "--batch-size", "2", "--num-workers",
            "0", "--image-size", "16", "--test-clips", "1", "--mode", "frozen", "--recipe", "vito-v1"]
