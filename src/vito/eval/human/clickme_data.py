"""ClickMe's files: the data set (a folder of ``.npz`` files, docs/clickme.md) read in batches, and the example
maps a run keeps (``clickme_examples.npz``) for its picture and for the ``--compare`` of later runs."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vito.errors import DataError
from vito.eval.human.saliency import MAP_SIZE, preprocess_human_maps, resize
from vito.io import atomic_write

EXAMPLES = "clickme_examples.npz"


@dataclass
class ClickMeBatch:
    images: torch.Tensor  # [B, 3, 224, 224] normalised
    pixels: torch.Tensor  # [B, 224, 224, 3] uint8, for pictures
    human_maps: torch.Tensor  # [B, 224, 224] preprocessed
    labels: torch.Tensor  # [B] ImageNet class indices
    names: list[str]


# How np.load fails on an .npz that is empty, truncated, corrupt inside, not a zip, pickled, or lacks a key.
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def clickme_files(root: str | Path) -> list[Path]:
    root = Path(root)
    files = sorted(root.rglob("*.npz")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no ClickMe .npz files (see `vito docs clickme` for the expected layout)")
    return files


def read_clickme_file(path: Path) -> dict[str, np.ndarray]:
    """Arrays ``image`` ``[N, H, W, 3]``, ``heatmap`` ``[N, H, W]`` and ``label`` ``[N]`` of one ``.npz``.

    One example may be stored without its batch axis. Grey images (no or one channel) are repeated to RGB and
    an alpha channel is dropped, so odd image modes read like RGB; anything else is a ``DataError``.
    """
    try:
        with np.load(path) as data:
            image, heatmap, label = (data[key] for key in ("image", "heatmap", "label"))
    except NPZ_ERRORS as error:
        raise DataError(f"{path}: not a ClickMe .npz with image, heatmap and label arrays ({error})") from error
    if label.ndim == 0 or (label.size == 1 and image.ndim == 3 and image.shape[-1] in (3, 4)):
        image, heatmap, label = image[None], heatmap[None], label.reshape(1)
    if heatmap.ndim == 4:
        heatmap = heatmap.mean(-1)
    if image.ndim == 3:
        image = image[..., None]
    if (image.ndim != 4 or image.shape[-1] not in (1, 3, 4) or heatmap.ndim != 3 or label.ndim != 1
            or not len(image) == len(heatmap) == len(label)):
        raise DataError(f"{path}: expected image [N,H,W,3], heatmap [N,H,W] and label [N]; got "
                        f"{list(image.shape)}, {list(heatmap.shape)} and {list(label.shape)}")
    if label.size and not (np.issubdtype(label.dtype, np.integer) and 0 <= label.min() and label.max() < 1000):
        raise DataError(f"{path}: labels must be ImageNet-1k class indices 0..999")
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return {"image": image, "heatmap": heatmap, "label": label.astype(np.int64)}


def iter_clickme(root: str | Path, batch_size: int = 64, image_size: int = MAP_SIZE) -> Iterator[ClickMeBatch]:
    """Batches from every ``.npz`` under ``root``; images resized bilinearly to ``image_size``."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for path in clickme_files(root):
        arrays = read_clickme_file(path)
        for start in range(0, len(arrays["label"]), batch_size):
            part = slice(start, start + batch_size)
            pixels = torch.from_numpy(np.ascontiguousarray(arrays["image"][part])).permute(0, 3, 1, 2).float()
            pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
            human = preprocess_human_maps(torch.from_numpy(np.ascontiguousarray(arrays["heatmap"][part])))
            yield ClickMeBatch(
                images=(pixels / 255.0 - mean) / std,
                pixels=pixels.clamp(0, 255).round().byte().permute(0, 2, 3, 1),
                human_maps=resize(human, image_size) if image_size != MAP_SIZE else human,
                labels=torch.from_numpy(np.asarray(arrays["label"][part], dtype=np.int64)),
                names=[f"{path.stem}:{i}" for i in range(start, start + len(arrays["label"][part]))],
            )


def save_examples(out_dir: Path, examples: dict[str, np.ndarray], model_name: str) -> None:
    """``OUT/clickme_examples.npz``: the example images, human maps and this model's maps, with its name."""
    with atomic_write(out_dir / EXAMPLES, "wb") as handle:
        np.savez_compressed(handle, **examples, model_name=np.array(model_name))


def load_examples(run_dirs: Sequence[str | Path]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The examples of several ``vito eval clickme`` output folders: (the first run's arrays, each run's model maps
    by model name); the runs must have used the same images, in the same order."""
    loaded = []
    for folder in run_dirs:
        path = Path(folder) / EXAMPLES
        if not path.is_file():
            raise DataError(f"no ClickMe examples at {path}")
        try:
            with np.load(path) as data:
                loaded.append({key: data[key] for key in data.files})
        except NPZ_ERRORS as error:
            raise DataError(f"{path}: unreadable ClickMe examples of an earlier run ({error})") from error
    first = loaded[0]
    for other in loaded[1:]:
        if list(other["names"]) != list(first["names"]):
            raise DataError("the ClickMe runs to compare used different example images")
    models: dict[str, np.ndarray] = {}
    for folder, data in zip(run_dirs, loaded):
        name = str(data["model_name"])
        models[name if name not in models else f"{name} ({Path(folder).name})"] = data["model"]
    return first, models
