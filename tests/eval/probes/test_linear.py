"""`vito eval linear`: the linear probe's protocols (the BYOL protocol recorded in the Result) and its views."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tests.eval.probes.helpers import image_folder
from vito.cli import main
from vito.eval.core.result import read_result


def test_linear_probe_offers_the_byol_protocol_and_records_it(shared_data, tmp_path) -> None:
    from vito.eval.probes.linear import AugmentedView

    data = image_folder(tmp_path / "data", shared_data)
    common = ["--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train", str(data), "--val",
              str(data), "--image-size", "32", "--num-workers", "0", "--lrs", "0.1", "0.05", "--epochs", "2",
              "--probe-batch-size", "2"]
    assert main(["eval", "linear", *common, "--protocol", "byol", "--out", str(tmp_path / "byol")]) == 0
    byol = read_result(tmp_path / "byol")
    assert byol.settings["protocol"] == "byol" and len(byol.tables["lr sweep"]) == 2
    assert (tmp_path / "byol" / "linear_head.pt").is_file()
    view = AugmentedView(32, seed=0)
    image = np.asarray(Image.open(next(data.rglob("*.JPEG"))).convert("RGB"))
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)
    assert not torch.equal(view(tensor), view(tensor))  # a new crop (and maybe flip) at every call
