"""Model-vs-human's data: its 16 categories, the conditions it leaves out, and the trials of response tables.

The benchmark of Geirhos et al. shows the same stimuli (edge drawings, cue-conflict images, low-pass filtered
or noisy photos) to people and to models, in 16 coarse categories. People's answers come as one CSV per subject
and dataset (the human raw data); a model's answers, or a person's, are read into the same ``Trial`` records.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vito.errors import DataError
from vito.io import inside_name, read_text

# The 16 categories in the benchmark's (alphabetical) order and their ImageNet-1k members (docs/metrics.md,
# model-vs-human).
CATEGORY_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, *range(10, 17), 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, *range(87, 97), 98, 99, 100,
             *range(127, 134), *range(135, 146)),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (*range(152, 192), *range(193, 204), *range(205, 227), *range(228, 242), *range(243, 251),
            *range(252, 258), 259, 261, 262, 263, 265, 266, 267, 268),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_INDICES)

# The paper's shape-biased subset (A.9) and the benchmark's excluded conditions (docs/metrics.md, model-vs-human):
# controls that are not out-of-distribution, and conditions on which people are below 20 % correct.
SHAPE_DATASETS = ("edge", "cue-conflict", "low-pass", "uniform-noise")
EXCLUDED_CONDITIONS: dict[str, frozenset[str]] = {
    "colour": frozenset({"cr"}),
    "contrast": frozenset({"c100", "c03", "c01"}),
    "high-pass": frozenset({"inf", "0.55", "0.45", "0.4"}),
    "low-pass": frozenset({"0", "15", "40"}),
    "phase-scrambling": frozenset({"0", "150", "180"}),
    "power-equalisation": frozenset({"0"}),
    "false-colour": frozenset({"True"}),
    "rotation": frozenset({"0"}),
    "eidolonI": frozenset({"1-10-10", "64-10-10", "128-10-10"}),
    "eidolonII": frozenset({"1-3-10", "32-3-10", "64-3-10", "128-3-10"}),
    "eidolonIII": frozenset({"1-0-10", "16-0-10", "32-0-10", "64-0-10", "128-0-10"}),
    "uniform-noise": frozenset({"0.0", "0.6", "0.9"}),
}

REQUIRED_COLUMNS = ("imagename", "object_response", "category", "condition")

# The benchmark's 17 datasets, and what a stimulus folder's name says about the dataset of the images below it:
# model-vs-human's release names its folders after the datasets, texture-vs-shape's repository calls them
# edges/, filled-silhouettes/ and style-transfer-preprocessed-512/ (docs/datasets.md).
DATASETS = ("colour", "contrast", "cue-conflict", "edge", "eidolonI", "eidolonII", "eidolonIII", "false-colour",
            "high-pass", "low-pass", "phase-scrambling", "power-equalisation", "rotation", "silhouette", "sketch",
            "stylized", "uniform-noise")
FOLDER_DATASETS = {**{name: name for name in DATASETS}, "edges": "edge", "filled-silhouettes": "silhouette",
                   "style-transfer-preprocessed-512": "cue-conflict"}


def sixteen_class_scores(logits: torch.Tensor) -> torch.Tensor:
    """``[B, 1000]`` logits → ``[B, 16]``: softmax, then the *mean* probability of each category's members.

    Mean, not sum: with sum, categories with many ImageNet members (109 dogs, 49 birds) would win by count.
    """
    probabilities = logits.float().softmax(dim=-1)
    columns = [probabilities[:, list(members)].mean(dim=-1) for members in CATEGORY_INDICES.values()]
    return torch.stack(columns, dim=-1)


def sixteen_class_decisions(logits: torch.Tensor) -> list[str]:
    """The benchmark's decision: the category with the highest mean member probability."""
    return [CATEGORIES[i] for i in sixteen_class_scores(logits).argmax(dim=-1).tolist()]


@dataclass(frozen=True)
class Trial:
    """One decision on one stimulus."""

    image_id: str
    category: str
    response: str
    condition: str

    @property
    def correct(self) -> bool:
        return self.response == self.category  # a human "na" (no answer) is simply wrong


Session = dict[str, Trial]  # image_id → trial: one decision maker on one dataset
HumanData = dict[str, dict[str, Session]]  # dataset → subject → session


def short_image_name(imagename: str) -> str:
    """The stimulus part of a trial's image name, without the experiment's prefix (trial, session, ...).

    ``0001_edg_s01_0_oven_00_oven10.png`` → ``oven10.png``;
    ``0001_lp_s01_40_chair_10_n04099969_7577.png`` → ``n04099969_7577.png`` (ImageNet names keep their wnid).
    """
    parts = Path(imagename).name.split("_")
    if len(parts) == 1:
        return parts[0]
    if parts[-2].startswith("n0"):
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def normalise_condition(raw: str) -> str:
    """Write a condition as the benchmark does after ``pandas.read_csv(...).astype(str)``: "0.60" → "0.6"."""
    text = str(raw).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return str(int(text))
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", text):
        return str(float(text))
    if text.lower() in ("true", "false"):
        return text.capitalize()
    return text


def read_response_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a responses CSV (the human raw-data format) with lower-case column names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"responses file not found: {path}")
    with io.StringIO(read_text(path, "responses file"), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip().lower() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
        return [{key.strip().lower(): (value or "").strip() for key, value in row.items() if key} for row in reader]


def trial_from_row(row: Mapping[str, str]) -> Trial:
    return Trial(
        image_id=inside_name(short_image_name(row["imagename"]), "responses file, column imagename"),
        category=row["category"],
        response=row["object_response"],
        condition=normalise_condition(row["condition"]),
    )


def load_human_data(raw_dir: str | Path, datasets: Sequence[str] = ()) -> HumanData:
    """Human sessions from one dataset folder (``raw-data/edge``) or the ``raw-data`` root (one folder each);
    with ``datasets``, only those (a named dataset without a folder is an error)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"human raw-data folder not found: {raw_dir}")
    folders = [raw_dir] if any(raw_dir.glob("*.csv")) else sorted(p for p in raw_dir.iterdir() if p.is_dir())
    if datasets:
        missing = [d for d in datasets if d not in {f.name for f in folders}]
        if missing:
            raise DataError(f"{raw_dir}: no human raw data for dataset(s) {', '.join(missing)} "
                            f"(found: {', '.join(f.name for f in folders)})")
        folders = [f for f in folders if f.name in datasets]
    data: HumanData = {}
    for folder in folders:
        subjects: dict[str, Session] = {}
        for path in sorted(folder.glob("*.csv")):
            for row in read_response_rows(path):
                subject = row.get("subj") or path.stem
                trial = trial_from_row(row)
                subjects.setdefault(subject, {})[trial.image_id] = trial
        if subjects:
            data[folder.name] = subjects
    if not data:
        raise DataError(f"no human response CSVs found in {raw_dir} or its sub-folders")
    return data


def assign_to_datasets(rows: Iterable[Mapping[str, str]], humans: HumanData) -> tuple[dict[str, Session], int]:
    """Sort a decision maker's trials into the human datasets they belong to; returns (sessions, unmatched).

    A row's ``dataset`` column, when present, decides. Otherwise a trial belongs to every dataset whose people
    saw the same stimulus (short image name) in the same condition.
    """
    keys = {name: {(t.image_id, t.condition) for s in subjects.values() for t in s.values()}
            for name, subjects in humans.items()}
    sessions: dict[str, Session] = {}
    unmatched = 0
    for row in rows:
        trial = trial_from_row(row)
        named = row.get("dataset")
        targets = [named] if named in humans else [n for n, k in keys.items() if (trial.image_id, trial.condition) in k]
        for name in targets:
            sessions.setdefault(name, {})[trial.image_id] = trial
        unmatched += not targets
    return sessions, unmatched
