"""Stand-ins the robustness tests share: an encoder whose embedding is the mean colour, a head that always
favours one class, and an ImageNet-A-like folder of real sample images."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vito.eval.robustness.imagenet_a import imagenet_a_classes


class ConstantEncoder(torch.nn.Module):
    """A stand-in encoder whose embedding is the mean colour: enough to drive the pipeline deterministically."""

    name = "constant"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def favouring(index: int) -> torch.nn.Linear:
    """A linear head on ``ConstantEncoder``'s 3 channels whose logits always rank class ``index`` first."""
    head = torch.nn.Linear(3, 1000)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[index] = 1.0
    return head


def imagenet_a_folder(shared_data: Path, root: Path, count: int = 3) -> list[str]:
    """``root/<wnid>/`` holding one real sample image each, for the first ``count`` ImageNet-A classes."""
    _, wnids = imagenet_a_classes()
    for wnid in wnids[:count]:
        (root / wnid).mkdir(parents=True)
        source = next((shared_data / "imagenet-sample-images").glob(f"{wnid}_*"))
        shutil.copy(source, root / wnid / source.name)
    return wnids[:count]
