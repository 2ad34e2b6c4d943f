"""vito.config: presets load, overrides apply, and every bad input names its key."""

from __future__ import annotations

import pytest

from vito.config import PRESET_DIR, Config, ConfigError, config_from_dict, load_config


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads(preset: str) -> None:
    assert isinstance(load_config(preset), Config)


def test_presets_differ_where_the_paper_says() -> None:
    vito, moclr = load_config("vito_r50"), load_config("moclr_r50")
    assert (vito.data.num_views, vito.data.sampling, vito.model.attention) == (3, "marginal", True)
    assert (moclr.data.num_views, moclr.data.sampling, moclr.model.attention) == (2, "same", False)
    assert moclr.data.crop_min_scale == 0.08 and vito.data.crop_min_scale == 0.4


def test_demo_preset_is_small() -> None:
    demo = load_config("demo")
    assert demo.model.backbone == "resnet18" and demo.data.image_size <= 96 and demo.data.batch_size <= 32


def test_overrides_are_typed() -> None:
    config = load_config("vito_r50", ["model.backbone=resnet18", "model.stages=[-1]", "optim.base_lr=1",
                                      "train.compile=true"])
    assert config.model.backbone == "resnet18"
    assert config.model.stages == [-1]
    assert config.optim.base_lr == 1.0 and isinstance(config.optim.base_lr, float)
    assert config.train.compile is True


def test_defaults_without_a_file() -> None:
    assert load_config(None).to_dict() == Config().to_dict()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.backbon=resnet18"], "model.backbon"),
        (["modle.backbone=resnet18"], "modle"),
        (["data.num_views=1"], "data.num_views"),
        (["data.sampling=random"], "data.sampling"),
        (["data.batch_size=eight"], "data.batch_size"),
        (["data.batch_size=8.5"], "data.batch_size"),
        (["train.compile=maybe"], "train.compile"),
        (["model.stages=[-1, -1]"], "model.stages"),
        (["loss.temperature=0"], "loss.temperature"),
        (["optim.ema_base=1.5"], "optim.ema_base"),
    ],
)
def test_bad_overrides_name_their_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        load_config("vito_r50", overrides)


def test_malformed_override_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["model.backbone"])
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")


def test_unknown_key_in_a_yaml_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_step: 10\n")
    with pytest.raises(ConfigError, match=r"train\.max_step"):
        load_config(path)


def test_round_trip_through_a_dict() -> None:
    config = load_config("moclr_r50", ["train.max_steps=7"])
    assert config_from_dict(config.to_dict()) == config
