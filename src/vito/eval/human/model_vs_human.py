"""``vito eval model-vs-human``: trial-by-trial agreement between a classifier and human observers
(docs/metrics.md, paper §4.2, A.9).

Three ways to get a decision maker (a model on the stimuli, a responses CSV, or every human against the others),
one way to score it (``scoring``), and the consistency table of this run beside earlier ones (``--compare``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vito.errors import DataError, VitoError
from vito.eval.core.classifier import ImageNetClassifier, InferenceSettings, attach_head
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result
from vito.eval.human.result_store import (
    TABLE_COLUMNS,
    decision_maker,
    load_results,
    row_label,
    save_details,
    table_rows,
)
from vito.eval.human.scoring import run_model_vs_human, score_humans_leave_one_out, score_responses_file

PICTURE = "model_vs_human.png"

# The Result's metrics: each headline value's kind and label.
METRIC_KINDS = {
    "accuracy": ("proportion", "accuracy (16 classes)"),
    "human_accuracy": ("proportion", "human accuracy (same trials)"),
    "accuracy_difference": ("proportion", "accuracy difference (squared)"),
    "observed_consistency": ("proportion", "observed consistency"),
    "error_consistency": ("signed", "error consistency (raw κ)"),
    "error_consistency_ceiled_accuracy_bound": ("signed", "κ / κ_max"),
    "error_consistency_ceiled_noise": ("proportion", "κ / human ceiling"),
}


def evaluate_model_vs_human(
    out: str | Path,
    raw_data: str | Path | None = None,
    responses: str | Path | None = None,
    classifier: ImageNetClassifier | None = None,
    stimuli: str | Path | None = None,
    humans: bool = False,
    compare: Iterable[str | Path] = (),
    datasets: Sequence[str] = (),
    **predict_kwargs,
) -> tuple[dict | None, dict[str, dict]]:
    """Score a responses file, every human against the others (``humans``), or a classifier on the stimuli;
    writes the details and the table picture (with the earlier results in ``compare``) into ``out``.

    Returns (this run's scores, or None with only ``compare``; every row of the table by label).
    """
    from vito.eval.human.pictures import draw_table  # matplotlib: kept out of `vito eval --help`

    earlier = load_results(compare)
    result, rows = None, None
    if responses is not None or humans or classifier is not None:
        if raw_data is None:
            raise DataError("model-vs-human needs --raw-data DIR (the human raw-data CSVs)")
        if humans:
            result = score_humans_leave_one_out(raw_data, datasets)
        elif responses is not None:
            result = score_responses_file(responses, raw_data, datasets)
        else:
            if stimuli is None:
                raise DataError("scoring a model needs --stimuli DIR (the stimulus images)")
            result, rows = run_model_vs_human(classifier, stimuli, raw_data, name=classifier.encoder.name,
                                              datasets=datasets, **predict_kwargs)
        result["artifacts"] = save_details(result, out, rows)
    elif not earlier:
        raise DataError("model-vs-human needs --responses FILE, --humans, --encoder ENC, or --compare RESULTS")
    if result is not None:
        name = row_label(result)
        earlier = {name if name not in earlier else f"{name} [this run]": result, **earlier}
    draw_table(earlier, Path(out) / PICTURE)
    return result, earlier


def coverage_of(result: dict, datasets: Sequence[str]) -> Coverage:
    """Trials scored out of the human trials of the datasets asked for (or those the decision maker took part in)."""
    scored = result["datasets"]
    used = sum(d.get("trials_compared", 0) for d in scored.values())
    expected = sum(d.get("human_trials", 0) for d in scored.values())
    without_stimuli = result.get("responses", {}).get("datasets_without_stimuli", {})
    missing = [d for d in datasets if d not in scored and d not in without_stimuli]
    note = f"trials of {', '.join(sorted(scored))}" + (f"; no trials for {', '.join(missing)}" if missing else "")
    if without_stimuli:
        note += f"; no stimuli for {', '.join(without_stimuli)}"
        expected += sum(without_stimuli.values())  # their human trials were asked for and not scored
    if missing or (without_stimuli and not sum(without_stimuli.values())):
        expected += 1  # a requested dataset with nothing scored: partial whatever its size
    return Coverage(used, max(expected, used), note)


@dataclass
class ModelVsHumanSettings(InferenceSettings):
    raw_data: Path | None = field(default=None, metadata={"help": "human raw-data root or one dataset's folder"})
    stimuli: Path | None = field(default=None, metadata={"help": "stimulus images (searched recursively)"})
    responses: Path | None = field(default=None, metadata={
        "help": "score this responses CSV instead of a model (a human subject's own CSV is scored against the "
        "other subjects only)"})
    humans: bool = field(default=False, metadata={
        "help": "score every human subject against the others (leave one out) instead of a model"})
    datasets: list[str] = field(default_factory=list, metadata={
        "help": "comma-separated datasets (the paper's: edge,cue-conflict,low-pass,uniform-noise; default: all "
        "found under --raw-data)", "cli": {"sep": ","}})
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "earlier model-vs-human output folders to put in the same table", "cli": {"nargs": "*"}})


@register
class ModelVsHuman(Evaluation):
    name = "model-vs-human"
    Settings = ModelVsHumanSettings
    needs_encoder = "optional"  # --responses, --humans and --compare score without a model
    uses_classifier = True
    group = "human"
    headline = "error_consistency_ceiled_noise"  # κ / human ceiling: Table 3's ceiled error consistency
    help = "accuracy difference, observed and error consistency with human observers"
    description = ("Classify model-vs-human stimuli into 16 categories and compare trial by trial with every human "
                   "subject; or score an existing responses CSV (--responses) or the humans themselves (--humans) "
                   "without a model.")

    def check(self, settings: ModelVsHumanSettings, has_encoder: bool) -> None:
        modes = [has_encoder, settings.responses is not None, settings.humans]
        if sum(modes) > 1:
            raise VitoError("model-vs-human scores one of --encoder, --responses or --humans at a time")
        if not any(modes) and not settings.compare:
            raise DataError("model-vs-human needs --responses FILE, --humans, --encoder ENC, or --compare RESULTS")
        if any(modes) and settings.raw_data is None:
            raise DataError("model-vs-human needs --raw-data DIR (the human raw-data CSVs)")
        if has_encoder and settings.stimuli is None:
            raise DataError("scoring a model needs --stimuli DIR (the stimulus images)")
        load_results(settings.compare)  # before the evaluation, not after it

    def unused_settings(self, settings: ModelVsHumanSettings, has_encoder: bool) -> dict[str, str]:
        """Without a model, nothing is classified: the classifier and image settings and the stimuli are unused."""
        if has_encoder:
            return {}
        why = "--responses, --humans and --compare classify no images"
        return {name: why for name in ("classifier", "image_size", "batch_size", "num_workers", "stimuli")}

    def run(self, encoder: Encoder | None, settings: ModelVsHumanSettings, out_dir: Path) -> Result:
        classifier = attach_head(encoder, settings.classifier) if encoder is not None else None
        scored, table = evaluate_model_vs_human(out_dir, settings.raw_data, settings.responses, classifier,
                                                settings.stimuli, settings.humans, settings.compare, settings.datasets,
                                                **settings.predict_kwargs())
        tables = {"decision makers": [{"decision maker": label, **{key: values.get(key) for key, _ in TABLE_COLUMNS}}
                                      for label, values in table_rows(table)]}
        if scored is None:
            count = len(settings.compare)
            return Result(self.name, {}, {"mode": "compare"}, Coverage(count, count, "earlier results in the table"),
                          tables=tables, pictures=[PICTURE])
        metrics = {key: Metric(scored["overall"].get(key), *METRIC_KINDS[key]) for key in METRIC_KINDS}
        if "cue-conflict" in scored["datasets"] and "shape_bias" in scored["datasets"]["cue-conflict"]:
            bias = scored["datasets"]["cue-conflict"]["shape_bias"]
            metrics["shape_bias"] = Metric(bias["shape_bias"] if isinstance(bias, dict) else bias, "proportion",
                                           "shape bias (cue-conflict)")
        tables["per dataset"] = [{"dataset": name,
                                  **{key: d["mean"].get(key) for key in METRIC_KINDS if key in d["mean"]},
                                  "error_consistency_ceiled_noise": d.get("error_consistency_ceiled_noise"),
                                  "humans_error_consistency": d["humans"]["error_consistency"]}
                                 for name, d in scored["datasets"].items()]
        skipped = [tuple(item) for item in scored.get("responses", {}).get("unreadable_images", [])]
        mode = "model" if encoder is not None else "humans" if settings.humans else "responses"
        return Result(self.name, metrics, {"mode": mode, "decision_maker": decision_maker(scored),
                                           "datasets_scored": sorted(scored["datasets"])},
                      coverage_of(scored, settings.datasets), tables=tables, pictures=[PICTURE], skipped=skipped,
                      artifacts=scored.get("artifacts", {}))
