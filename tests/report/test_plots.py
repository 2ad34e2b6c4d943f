"""``vito.report.plots.study_plot``: numeric and categorical x, undefined points named not drawn, reference lines,
the same SVG for the same points, a PNG that decodes."""

from __future__ import annotations

import io
import re

from PIL import Image

from vito.report.plots import PlotPoint, PlotReference, study_plot

CROPS = [PlotPoint("crop-0.4", 0.4, 0.755, 0.004, 3), PlotPoint("crop-0.08", 0.08, 0.738, 0.006, 3),
         PlotPoint("crop-0.2 (ours)", 0.2, 0.748, 0.002, 3)]
REFERENCES = [PlotReference("MoCLR on ImageNet", 0.764, 0.003), PlotReference("supervised", 0.713, None)]


def test_numeric_x_is_a_sorted_line_with_error_bars_and_labelled_references() -> None:
    png, svg = study_plot("crop scale", "data.crop_min_scale", "voc mIoU", CROPS, REFERENCES)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and 400 <= image.width <= 2000 and 300 <= image.height <= 2000
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for label in ("crop-0.08", "crop-0.2 (ours)", "crop-0.4", "MoCLR on ImageNet", "supervised",
                  "mean ± sd over 3 seeds", "data.crop_min_scale", "voc mIoU"):
        assert f"<!-- {label} -->" in svg, label
    # the line's vertices run left to right in x order: 0.08, 0.2, 0.4 (the given order was 0.4, 0.08, 0.2)
    line = _the_line(svg)
    assert line == sorted(line) and len(line) == 3
    assert svg.count("<!-- MoCLR on ImageNet -->") == 1
    assert '<g id="reference-0">' in svg and '<g id="reference-1">' in svg
    assert '<g id="reference-0-band">' in svg and '<g id="reference-1-band">' not in svg  # a band only with an sd


def _the_line(svg: str) -> list[float]:
    """x coordinates of the points' line's vertices (the path in the group the plot names study-points)."""
    match = re.search(r'<g id="study-points">\s*<path d="M ([^"]+)"', svg)
    assert match, "no line of points in the SVG"
    return [float(vertex.split()[0]) for vertex in re.split(r"\s*L ", match.group(1).strip())]


def test_categorical_x_keeps_the_given_order() -> None:
    points = [PlotPoint("marginal", "marginal", 0.75, 0.01, 2), PlotPoint("uniform", "uniform", 0.74, 0.01, 2),
              PlotPoint("delta", "delta", 0.73, None, 1)]
    png, svg = study_plot("sampling", "data.sampling", "voc mIoU", points, [])
    assert Image.open(io.BytesIO(png)).size[0] > 0
    ticks = re.split(r'<g id="xtick_\d+">', svg.split('<g id="matplotlib.axis_2">')[0])[1:]
    assert [re.search(r"<!-- (\w+) -->", tick).group(1) for tick in ticks] == ["marginal", "uniform", "delta"]
    line = _the_line(svg)
    assert line == sorted(line) and len(line) == 3
    assert "mean ± sd over 1–2 seeds" in svg


def test_an_undefined_point_is_not_drawn_and_is_named_under_the_plot() -> None:
    points = [*CROPS, PlotPoint("crop-0.6 (ours)", 0.6, None, None, 3)]
    _, svg = study_plot("crop scale", "data.crop_min_scale", "voc mIoU", points,
                        [PlotReference("MoCLR on VideoNet", None, None)])
    assert "not drawn (undefined: a seed failed or is partial): crop-0.6 (ours) (0.6), MoCLR on VideoNet" in svg
    assert len(_the_line(svg)) == 3
    assert "<!-- MoCLR on VideoNet -->" not in svg  # no legend entry for a line that is not there
    _, nothing = study_plot("empty", "x", "y", [PlotPoint("a", 1.0, None, None, 2)], [])
    assert "not drawn (undefined: a seed failed or is partial): a (1.0)" in nothing


def test_the_same_points_give_the_same_svg_and_png() -> None:
    first = study_plot("crop scale", "data.crop_min_scale", "voc mIoU", CROPS, REFERENCES)
    second = study_plot("crop scale", "data.crop_min_scale", "voc mIoU", CROPS, REFERENCES)
    assert first[1] == second[1] and first[0] == second[0]
    assert "<dc:date>" not in first[1]
    other = study_plot("crop scale", "data.crop_min_scale", "voc mIoU", CROPS[:2], REFERENCES)
    assert other[1] != first[1]
