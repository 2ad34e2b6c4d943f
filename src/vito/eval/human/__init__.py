"""Alignment with humans: model-vs-human decisions and error consistency (`vito eval model-vs-human`) and
ClickMe saliency (`vito eval clickme`)."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.human import clickme, model_vs_human  # noqa: F401
