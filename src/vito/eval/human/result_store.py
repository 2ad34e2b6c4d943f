"""Model-vs-human's own result files: what a run writes beside its Result, and what ``--compare`` reads back.

``model_vs_human.json`` holds every number behind a run's Result (per dataset, subject and condition), and a
model's run adds its ``responses.csv``. An earlier run's details make one row of the consistency table
(paper Table 3) that ``--compare`` draws beside this run.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

from vito.errors import DataError
from vito.io import atomic_write, read_json, write_json

RESPONSE_COLUMNS = ("subj", "trial", "object_response", "category", "condition", "imagename", "dataset")
DETAILS = "model_vs_human.json"  # the per-dataset, per-subject, per-condition breakdown (an artifact)


def decision_maker(result: Mapping) -> str:
    """The row label of a result: the model's name, the responding subject, or the leave-one-out humans."""
    return result.get("responses", {}).get("decision_maker") or "responses"


def save_details(result: dict, out_dir: str | Path, responses: list[dict[str, str]] | None = None) -> dict[str, str]:
    """``OUT/model_vs_human.json`` (every number behind the Result) and, for a model, ``OUT/responses.csv``."""
    out_dir = Path(out_dir)
    write_json(out_dir / DETAILS, result)
    artifacts = {"details": DETAILS}
    if responses:
        with atomic_write(out_dir / "responses.csv") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESPONSE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(responses)
        artifacts["responses"] = "responses.csv"
    return artifacts


def load_results(items: Iterable[str | Path]) -> dict[str, dict]:
    """Earlier ``vito eval model-vs-human`` outputs (folders or their ``model_vs_human.json``), by row label.

    A row is labelled with its decision maker and the datasets it was scored on, so that rows over different
    datasets are never mistaken for one another.
    """
    loaded: dict[str, dict] = {}
    for item in items:
        path = Path(item) / DETAILS if Path(item).is_dir() else Path(item)
        if not path.is_file():
            raise DataError(f"no model-vs-human result at {path}")
        result = read_json(path, "model-vs-human result")
        if not (isinstance(result, dict) and isinstance(result.get("datasets"), dict)
                and isinstance(result.get("overall"), dict) and "humans" in result):
            raise DataError(f"{path} is not a model-vs-human result (it needs 'datasets', 'overall' and 'humans'; "
                            f"give the {DETAILS} of an earlier run)")
        name = row_label(result)
        loaded[name if name not in loaded else f"{name} [{path.parent.name}]"] = result
    return loaded


def row_label(result: Mapping) -> str:
    return f"{decision_maker(result)} ({', '.join(sorted(result['datasets']))})"


TABLE_COLUMNS = (
    ("accuracy_difference", "accuracy diff. (sq.) ↓"),
    ("observed_consistency", "obs. consistency ↑"),
    ("error_consistency", "error consistency (raw κ) ↑"),
    ("error_consistency_ceiled_accuracy_bound", "κ/κ_max ↑"),
    ("error_consistency_ceiled_noise", "κ / human ceiling ↑"),
    ("accuracy", "accuracy"),
)


def table_rows(results: Mapping[str, dict]) -> list[tuple[str, dict[str, float]]]:
    """(label, overall metrics) per decision maker, then the humans' reference row of each distinct dataset set."""
    rows = [(name, result["overall"]) for name, result in results.items()]
    humans_seen = {}
    for result in results.values():
        key = ", ".join(sorted(result["datasets"]))
        humans_seen.setdefault(key, result["humans"])
    rows += [(f"humans, subject pairs ({key})", values) for key, values in humans_seen.items()]
    return rows
