"""index.html: self-contained (data-URI thumbnails, relative links inside the report) and read by a real browser."""

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageStat

from vito.report.build import make_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-extensions", "--hide-scrollbars"]
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const probe = document.createElement("div");
  probe.id = "probe";
  probe.dataset.images = images.length;
  probe.dataset.loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  probe.dataset.widths = images.map(i => i.naturalWidth).join(",");
  probe.dataset.tables = document.querySelectorAll("table.results").length;
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture
def report(tmp_path, fakes) -> Path:
    (tmp_path / "data").mkdir()
    suite = {"encoders": {"vito": {"encoder": "timm:resnet18", "random_init": True},
                          "random": {"encoder": "timm:resnet34", "random_init": True}},
             "evaluations": {"linear": {"train": "data"}, "knn": {"train": "data", "used": 3},
                             "imagenet-a": {"root": "data"}, "davis": {"davis_root": "no-such-folder"}}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    out = tmp_path / "report"
    make_report(tmp_path / "suite.yaml", out, echo=lambda _: None)
    return out


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_thumbnails_are_embedded_and_links_stay_inside_the_report(report) -> None:
    page = (report / "index.html").read_text()
    thumbnails = _data_uris(page)
    assert len(thumbnails) == 2  # one picture per imagenet-a cell
    for data in thumbnails:
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (64, 40)
    links = re.findall(r'href="([^"]+)"', page)
    assert "cells/vito/imagenet-a/errors.png" in links and "cells/vito/knn/" in links
    for link in links:
        assert not re.match(r"[a-z]+:|/", link), link  # relative: the folder can be moved or mailed
        assert (report / link).resolve().is_relative_to(report.resolve()) and (report / link).exists(), link
    assert "<script" not in page and "<link" not in page and "http" not in page


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return found


def _browse(binary: str, page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(profile)})


def test_page_renders_in_headless_chromium(report, tmp_path) -> None:
    binary = _chromium()
    shot = tmp_path / "screenshot.png"
    done = _browse(binary, report / "index.html", tmp_path / "profile", f"--screenshot={shot}",
                   "--window-size=1280,1600")
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        grey = image.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 20  # text and tables, not a blank page
        assert len(grey.getcolors(256 * 256) or []) > 50

    probe = report / "probe.html"  # beside index.html, so that its relative links resolve the same way
    probe.write_text((report / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    done = _browse(binary, probe, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000")
    dom = done.stdout
    assert '<table class="results">' in dom and "Table 1 · OOD recognition" in dom, done.stderr[-2000:]
    found = re.search(r'id="probe" data-images="(\d+)" data-loaded="(\d+)" data-widths="([\d,]*)" '
                      r'data-tables="(\d+)"', dom)
    assert found, dom[-2000:]
    images, loaded, widths, tables = found.groups()
    assert images == loaded == "2" and widths == "64,64" and tables == "3"
    assert dom.count('class="failed"') == 2 and dom.count('class="partial"') == 4
