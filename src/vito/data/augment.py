"""BYOL image augmentations for the views of a clip (paper §3.1, docs/pretraining.md), split in two for speed.

Measured on CPU (docs: /work/shared/design/measurements.md), the per-pixel colour and blur work is the
bottleneck, while cropping is cheap. So:

1. ``RandomResizedCropFlip`` runs per sample in the data loader on uint8 frames (CPU, cheap): the loader
   calls ``crop_into``, one OpenCV resize per crop straight from the decoded array into the batch
   (``__call__`` is the same box and flip on a tensor, with torchvision's antialiased resize);
2. ``PhotometricAugment`` runs batched on the training device on the whole batch of views (colour jitter,
   grayscale, view-dependent blur and solarisation, then ImageNet normalisation), with per-sample random
   parameters drawn from a ``torch.Generator`` so a run is reproducible.

The colour operations follow BYOL's reference implementation: additive brightness, contrast around the
mean, saturation around the grayscale image, hue rotation, applied in a random order per image, each
clipped to [0, 1]. Kornia provides batched versions that accept one factor per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2

try:  # the training machine needs it; a machine only decoding and cropping (a bare GPU box) may lack it
    import kornia
except ImportError:  # pragma: no cover - kornia is a core dependency
    kornia = None
import numpy as np
import torch

from vito.config import Config
from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, normalize  # noqa: F401 - re-exported for callers
from vito.errors import VitoError

# OpenCV runs on one thread in every process that crops: the crops already run one per DataLoader worker, and
# OpenCV's thread pool does not survive fork. A worker forked just after the pool ran (the main process cropping
# with 0 workers, or probing a clip, then starting workers) deadlocks in its first OpenCV call, which showed as
# a test suite hanging in a worker's cv2.setNumThreads; a pool that never starts cannot be copied mid-job.
cv2.setNumThreads(1)


# --------------------------------------------------------------------------------------------------
# 1. Geometry: per sample, uint8, in the data loader


class RandomResizedCropFlip:
    """Random-resized crop (area fraction in ``scale``, aspect in ``ratio``) to ``size``, then a flip p=0.5.

    VITO uses a minimum area of 0.4 instead of BYOL's 0.08 (docs/pretraining.md). The box is drawn as torchvision's
    ``RandomResizedCrop`` does (10 attempts, then the largest centred crop within ``ratio``), but from a
    numpy ``Generator`` passed in, so the data loader's crops are a pure function of its seed.
    """

    def __init__(self, size: int = 224, scale: tuple[float, float] = (0.4, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size = size
        self.scale = scale
        self.ratio = ratio

    def sample_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, box_height, box_width) of a crop whose area fraction lies in ``scale``."""
        area = height * width
        low, high = self.scale
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            # ``low + (high - low) * rng.random()`` is how ``Generator.uniform`` computes its draw (bit for bit
            # the same numbers), at a seventh of the cost of the scalar call: this runs for every view.
            target = area * (low + (high - low) * rng.random())
            aspect = math.exp(log_low + (log_high - log_low) * rng.random())
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        aspect = width / height  # fallback: centred crop, as large as the ratio allows
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def sample(self, height: int, width: int, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], bool]:
        """The box and the flip of one crop, drawn in this order (every crop path draws them so)."""
        box = self.sample_box(height, width, rng)
        return box, bool(rng.random() < 0.5)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 [3, H, W] -> uint8 [3, size, size]."""
        import torchvision.transforms.v2.functional as TF  # torchvision loads its model zoo: not in `vito eval --help`

        (top, left, h, w), flip = self.sample(image.shape[-2], image.shape[-1], rng)
        crop = TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        return TF.horizontal_flip(crop) if flip else crop

    def crop_into(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        """uint8 [H, W, 3] -> ``out`` uint8 [size, size, 3] (C-contiguous): the same box and flip as ``__call__``.

        Why not ``__call__``: per frame it cost a tensor round trip and an antialiased float resize, about as
        much CPU as decoding the JPEG; here the crop is a view of the decoded array and one OpenCV resize
        writes the result in place (per view, a mean difference to ``__call__`` below 2/255, about 0.4/255 on
        average; see docs/data_path.md).
        """
        (top, left, h, w), flip = self.sample(image.shape[0], image.shape[1], rng)
        resize_into(image[top : top + h, left : left + w], out, flip)


def resize_into(image: np.ndarray, out: np.ndarray, flip: bool = False) -> None:
    """Resize uint8 [h, w, 3] into ``out`` [H, W, 3] (mirrored left-right when ``flip``), close to
    torchvision's antialiased bilinear resize at a fraction of its cost.

    Enlarging, both are plain bilinear with half-pixel centres (OpenCV's ``INTER_LINEAR``). Shrinking by a
    factor ``f`` below 2 (the training crops: a 224 crop of 256-px frames shrinks by up to ~1.5),
    torchvision widens the bilinear kernel to a triangle of half-width ``f``; here a 3-tap blur of the
    same variance (``(f^2 - 1) / 6``) before the bilinear resize stands in for it, on each axis that
    shrinks by more than 10 % (without it, textured frames alias: up to 2.4/255 mean difference per view).
    The blur is OpenCV's 3-tap Gaussian of that variance along the axes that need it: its fixed-point uint8
    code costs ~30 % less than a general separable filter (results within one level of it).
    Shrinking 2x or more on an axis uses area averaging (``INTER_AREA``, antialiased but ~5x slower).
    """
    size = (out.shape[1], out.shape[0])
    fy, fx = image.shape[0] / out.shape[0], image.shape[1] / out.shape[1]
    if max(fx, fy) >= 2:
        cv2.resize(image, size, dst=out, interpolation=cv2.INTER_AREA)
    else:
        if fx > _PREFILTER_FROM or fy > _PREFILTER_FROM:
            (kx, sx), (ky, sy) = _blur_taps(fx), _blur_taps(fy)
            image = cv2.GaussianBlur(image, (kx, ky), sx, sigmaY=sy, borderType=cv2.BORDER_REPLICATE)
        cv2.resize(image, size, dst=out, interpolation=cv2.INTER_LINEAR)
    if flip:
        cv2.flip(out, 1, dst=out)


_PREFILTER_FROM = 1.1  # shrink factor above which ``resize_into`` blurs before resizing


def _blur_taps(factor: float) -> tuple[int, float]:
    """(kernel size, sigma) of the 3-tap Gaussian of variance (f^2 - 1) / 6 along an axis shrinking by ``f``:
    bilinear's triangle (variance 1/6) convolved with it has the variance of the triangle of half-width ``f``
    (f^2 / 6). The kernel [g, 1, g] / (1 + 2g), ``g = exp(-1 / (2 sigma^2))``, has variance 2g / (1 + 2g).
    (1, 0.0), no blur, along an axis that shrinks by ``_PREFILTER_FROM`` or less."""
    if factor <= _PREFILTER_FROM:
        return 1, 0.0
    variance = (factor * factor - 1) / 6  # below 1/2 for f < 2, so 0 < g < 1/2
    g = variance / (2 * (1 - variance))
    return 3, math.sqrt(-1 / (2 * math.log(g)))


# --------------------------------------------------------------------------------------------------
# 2. Photometry: batched, on any device


@dataclass(frozen=True)
class PhotometricParams:
    """Per-image random draws; kept separate from their application so they can be tested directly."""

    jitter: torch.Tensor  # bool [N]: colour jitter applied
    order: torch.Tensor  # int64 [N, 4]: order of (brightness, contrast, saturation, hue)
    brightness: torch.Tensor  # float [N]: additive delta
    contrast: torch.Tensor  # float [N]: factor
    saturation: torch.Tensor  # float [N]: factor
    hue: torch.Tensor  # float [N]: rotation as a fraction of the colour circle
    grayscale: torch.Tensor  # bool [N]
    blur: torch.Tensor  # bool [N]
    sigma: torch.Tensor  # float [N]
    solarize: torch.Tensor  # bool [N]


class PhotometricAugment:
    """BYOL colour jitter (p=0.8), grayscale (p=0.2), blur and solarisation with per-view probabilities.

    ``blur_p`` and ``solarize_p`` list the probabilities for views 0, 1, ...; views beyond the list use
    the last entry of ``*_extra`` (BYOL defines two views; VITO's third view gets blur 0.5, solarise 0).
    """

    def __init__(
        self,
        size: int = 224,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_p: float = 0.2,
        blur_p: Sequence[float] = (1.0, 0.1),
        blur_extra: float = 0.5,
        sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: Sequence[float] = (0.0, 0.2),
        solarize_extra: float = 0.0,
    ):
        if kornia is None:
            raise VitoError("kornia is not installed: `pip install kornia` (the photometric augmentation uses it)")
        self.jitter_p, self.grayscale_p = jitter_p, grayscale_p
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.blur_p, self.blur_extra = tuple(blur_p), blur_extra
        self.solarize_p, self.solarize_extra = tuple(solarize_p), solarize_extra
        self.sigma = sigma
        self.kernel_size = blur_kernel_size(size)

    def sample_params(self, view_index: torch.Tensor, generator: torch.Generator) -> PhotometricParams:
        """Draw every random decision for N images on the generator's device (CPU by default)."""
        n = view_index.numel()
        device = generator.device
        view_index = view_index.to(device)

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) * (high - low) + low

        def coin(p: torch.Tensor | float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) < p

        return PhotometricParams(
            jitter=coin(self.jitter_p),
            order=torch.argsort(torch.rand(n, 4, generator=generator, device=device), dim=1),
            brightness=uniform(-self.brightness, self.brightness),
            contrast=uniform(1 - self.contrast, 1 + self.contrast),
            saturation=uniform(1 - self.saturation, 1 + self.saturation),
            hue=uniform(-self.hue, self.hue),
            grayscale=coin(self.grayscale_p),
            blur=coin(_per_view(self.blur_p, self.blur_extra, view_index)),
            sigma=uniform(*self.sigma),
            solarize=coin(_per_view(self.solarize_p, self.solarize_extra, view_index)),
        )

    def __call__(self, images: torch.Tensor, view_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 or float [N, 3, H, W] (float in [0, 1]) -> normalised float [N, 3, H, W]."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        params = self.sample_params(view_index, generator)
        return normalize(self.apply(images, params))

    def apply(self, images: torch.Tensor, params: PhotometricParams) -> torch.Tensor:
        """Apply drawn parameters to float images in [0, 1] (no normalisation)."""
        p = {k: v.to(images.device) for k, v in vars(params).items()}
        x = images.clone()
        colour_ops = (
            lambda img, rows: kornia.enhance.adjust_brightness(img, p["brightness"][rows]),
            lambda img, rows: kornia.enhance.adjust_contrast_with_mean_subtraction(img, p["contrast"][rows]),
            lambda img, rows: kornia.enhance.adjust_saturation_with_gray_subtraction(img, p["saturation"][rows]),
            lambda img, rows: kornia.enhance.adjust_hue(img, p["hue"][rows] * 2 * math.pi),
        )
        for position in range(4):  # each image visits the four operations in its own order
            for op_index, op in enumerate(colour_ops):
                rows = torch.nonzero(p["jitter"] & (p["order"][:, position] == op_index)).flatten()
                if rows.numel():
                    x[rows] = op(x[rows], rows).clamp_(0.0, 1.0)
        rows = torch.nonzero(p["grayscale"]).flatten()
        if rows.numel():
            x[rows] = kornia.color.rgb_to_grayscale(x[rows]).expand(-1, 3, -1, -1)
        rows = torch.nonzero(p["blur"]).flatten()
        if rows.numel():
            sigma = p["sigma"][rows, None].expand(-1, 2).to(x.dtype)
            x[rows] = kornia.filters.gaussian_blur2d(x[rows], self.kernel_size, sigma, border_type="reflect")
        rows = torch.nonzero(p["solarize"]).flatten()
        if rows.numel():
            x[rows] = torch.where(x[rows] < 0.5, x[rows], 1.0 - x[rows])
        return x


def make_views(batch: Mapping[str, torch.Tensor] | torch.Tensor, config: Config,
               generator: torch.Generator) -> torch.Tensor:
    """The training views of a batch: its uint8 crops ``[B, V, 3, S, S]`` (a pretraining batch's ``"views"``, or
    that tensor itself) → photometrically augmented, ImageNet-normalised float views of the same shape.

    View ``v`` of every clip takes view ``v``'s blur and solarisation probabilities (BYOL's asymmetric pair, then
    VITO's later views); every random draw comes from ``generator`` (CPU or the crops' device), so the views are
    a function of the crops and the generator's state: the pretraining loop seeds it from (seed, step, rank), and
    a resumed run repeats them.
    """
    views = batch["views"] if isinstance(batch, Mapping) else batch
    b, v = views.shape[:2]
    view_index = torch.arange(v, device=views.device).repeat(b)  # clip-major, as views.flatten(0, 1)
    images = PhotometricAugment(size=config.data.image_size)(views.flatten(0, 1), view_index, generator)
    return images.unflatten(0, (b, v))


def blur_kernel_size(size: int) -> int:
    """BYOL's 23-pixel kernel at 224 px, scaled to ``size`` and kept odd."""
    k = max(3, round(23 * size / 224))
    return k if k % 2 == 1 else k + 1


def _per_view(probabilities: tuple[float, ...], extra: float, view_index: torch.Tensor) -> torch.Tensor:
    table = torch.tensor([*probabilities, extra], device=view_index.device)
    return table[view_index.clamp(max=len(probabilities))]
