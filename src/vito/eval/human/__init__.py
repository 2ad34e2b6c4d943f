"""Alignment with humans: model-vs-human decisions and error consistency (`vito eval model-vs-human`) and
ClickMe saliency (`vito eval clickme`)."""
