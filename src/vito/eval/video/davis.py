"""``vito eval davis``: DAVIS video object segmentation by label propagation, scored with J&F.

Two halves that meet at a results folder in the official layout (``RESULTS/<sequence>/<frame>.png``, palette
PNGs whose indices are object ids): ``propagate_davis`` writes one with a frozen encoder
(``davis_propagation``), and ``score_results`` scores any such folder (``davis_scoring``); ``davis_data`` reads
and writes the files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vito.engine.progress import progress
from vito.errors import VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result
from vito.eval.video.davis_data import find_sequences, save_palette_png
from vito.eval.video.davis_pictures import save_propagation_strip
from vito.eval.video.davis_propagation import PropagationSettings, propagate_sequence
from vito.eval.video.davis_scoring import score_results


def propagate_davis(
    encoder: Encoder,
    davis_root: str | Path,
    out_dir: str | Path,
    settings: PropagationSettings | None = None,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    layout: str = "auto",
) -> dict[str, Any]:
    """Propagate the first-frame labels of every sequence into ``OUT/results/<seq>/<frame>.png`` and score them."""
    settings = settings or PropagationSettings()
    if settings.stride8:
        encoder.remove_stride(settings.stage)
    results_dir = Path(out_dir) / "results"
    found = find_sequences(davis_root, resolution, sequences)
    frames_done, started = 0, time.perf_counter()
    for sequence in progress(found, desc="DAVIS propagation", unit="seq"):
        predictions = propagate_sequence(encoder, sequence, settings, layout)
        for ids, annotation_like in zip(predictions, sequence.frames):
            save_palette_png(results_dir / sequence.name / f"{annotation_like.stem}.png", ids)
        frames_done += len(predictions)
    elapsed = time.perf_counter() - started
    scores = score_results(davis_root, results_dir, [s.name for s in found], resolution, layout, settings.max_frames)
    return {**scores, "frames": frames_done, "frames_per_second": frames_done / elapsed}


GLOBAL_METRICS = {
    "J&F-Mean": ("jf_mean", "proportion"), "J-Mean": ("j_mean", "proportion"),
    "J-Recall": ("j_recall", "proportion"), "J-Decay": ("j_decay", "signed"),
    "F-Mean": ("f_mean", "proportion"), "F-Recall": ("f_recall", "proportion"), "F-Decay": ("f_decay", "signed"),
}


@dataclass
class DavisSettings(PropagationSettings):
    davis_root: Path = field(default=None, metadata={"help": "folder with JPEGImages/ and Annotations/",
                                                     "cli": {"required": True}})
    results: Path | None = field(default=None, metadata={
        "help": "only score this results folder (RESULTS/<seq>/<frame>.png), like the official script"})
    sequences: list[str] | None = field(default=None, metadata={
        "help": "comma-separated sequence names (default: all annotated)", "cli": {"sep": ","}})
    resolution: str = field(default="480p", metadata={"help": "JPEGImages/ and Annotations/ sub-folder"})
    layout: Literal["auto", "2016", "2017"] = field(default="auto", metadata={
        "help": "2016: grey 0/255 single-object masks; 2017: palette ids with 255 = void"})


@register
class Davis(Evaluation):
    name = "davis"
    Settings = DavisSettings
    needs_encoder = "optional"  # --results: score a results folder without an encoder
    group = "video"
    headline = "jf_mean"  # J&F mean, Table 1's DAVIS column
    help = "DAVIS video object segmentation by label propagation, scored with J&F"
    description = ("With --encoder: propagate the first-frame masks (VFS settings: res4 at stride 8, first + 20 "
                   "preceding frames, top-10, T=0.07, radius 18) and score them. With --results: only score a "
                   "results folder, like the official evaluation script.")

    def check(self, settings: DavisSettings, has_encoder: bool) -> None:
        if settings.davis_root is None:
            raise VitoError("vito eval davis needs --davis-root DIR")
        if has_encoder == (settings.results is not None):
            raise VitoError("vito eval davis: give --encoder ENC (propagate and score) or --results DIR (score only)")

    def unused_settings(self, settings: DavisSettings, has_encoder: bool) -> dict[str, str]:
        """Scoring a results folder uses none of the propagation settings but ``max_frames``."""
        if has_encoder:
            return {}
        propagation = {f.name for f in dataclasses.fields(PropagationSettings)} - {"max_frames"}
        return {name: "--results only scores a results folder" for name in sorted(propagation)}

    def run(self, encoder: Encoder | None, settings: DavisSettings, out_dir: Path) -> Result:
        if encoder is None:
            scores = score_results(settings.davis_root, settings.results, settings.sequences, settings.resolution,
                                   settings.layout, settings.max_frames)
            extra, artifacts = {"mode": "score"}, {}
        else:
            scores = propagate_davis(encoder, settings.davis_root, out_dir, settings, settings.sequences,
                                     settings.resolution, settings.layout)
            extra = {"mode": "propagate", "frames_per_second": scores["frames_per_second"]}
            artifacts = {"results": "results"}
        metrics = {key: Metric(scores["global"][name], kind, name) for name, (key, kind) in GLOBAL_METRICS.items()}
        note = f"scored frames of {len(scores['per_object'])} objects"
        if settings.max_frames:
            note += f" (only the first {settings.max_frames} frames of each sequence)"
        coverage = Coverage(scores["frames_scored"], scores["frames_annotated"], note)
        per_object = [{"object": key, **values} for key, values in scores["per_object"].items()]
        results_dir = out_dir / "results" if encoder is not None else settings.results
        out_dir.mkdir(parents=True, exist_ok=True)
        picture = save_propagation_strip(settings.davis_root, results_dir, out_dir / "masks", settings.sequences,
                                         settings.resolution, settings.layout)
        return Result(self.name, metrics, extra, coverage, tables={"per object": per_object}, artifacts=artifacts,
                      pictures=[picture] if picture else [])
