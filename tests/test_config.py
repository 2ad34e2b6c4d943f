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
        (["loss.negatives=online"], "loss.negatives"),
        (["optim.warmup_epochs=-1"], "optim.warmup_epochs"),
        (["optim.warmup_epochs=null"], "optim.warmup_epochs"),  # and no warmup_steps: no warm-up length at all
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


# --------------------------------------------------------------------------------------------------
# Parse, then validate (issue 10, items 5 and 7)


@pytest.mark.parametrize("spelling", ["1e-5", "1E-5", "1.0e-5", "0.00001", "+1e-5", "1.e-5", "10e-6"])
def test_every_float_spelling_is_a_float(spelling: str, tmp_path) -> None:
    """YAML 1.1 (PyYAML) reads 1e-5 as a string; users, YAML 1.2 and the presets mean a number."""
    path = tmp_path / "lr.yaml"
    path.write_text(f"optim:\n  weight_decay: {spelling}\n")
    assert load_config(path).optim.weight_decay == pytest.approx(1e-5)
    assert load_config(None, [f"optim.base_lr={spelling}"]).optim.base_lr == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match=r"train\.max_steps: expected an integer"):
        load_config(None, ["train.max_steps=1e3"])  # an integer key still wants an integer


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.seed=-1", "train.seed"),
        (f"train.seed={2**63}", "train.seed"),
        ("optim.momentum=1.0", "optim.momentum"),
        ("optim.momentum=-0.1", "optim.momentum"),
        ("optim.trust_coefficient=-0.001", "optim.trust_coefficient"),
        ("loss.temperature=.nan", "loss.temperature"),
        ("loss.temperature=.inf", "loss.temperature"),
        ("data.window_seconds=.inf", "data.window_seconds"),
        ("optim.base_lr=.nan", "optim.base_lr"),
        ("optim.base_lr=-.inf", "optim.base_lr"),
        ("train.keep_checkpoints=-1", "train.keep_checkpoints"),
    ],
)
def test_values_that_crash_later_or_train_nonsense_are_rejected(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("vito_r50", [override])


def test_edge_values_that_are_fine() -> None:
    config = load_config("vito_r50", [f"train.seed={2**63 - 1}", "optim.momentum=0", "optim.trust_coefficient=0"])
    assert config.train.seed == 2**63 - 1 and config.optim.momentum == 0.0


def test_yaml_syntax_errors_name_the_line_and_tabs(tmp_path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("train:\n\tmax_steps: 10\n")
    with pytest.raises(ConfigError, match=r"tabs\.yaml: not valid YAML at line 2, column 1: .*tabs for indentation"):
        load_config(path)
    path.write_text("train:\n  max_steps: [10\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"override 'model\.stages=\[-1': not valid YAML"):
        load_config(None, ["model.stages=[-1"])


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# r\xe9glages\ntrain:\n  max_steps: 10\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        load_config(path)


@pytest.mark.parametrize(("text", "message"), [
    ("data:\n  batch_size: 4\n  batch_size: 8\n",
     r"line 3, column 3: duplicate key 'batch_size' \(first given at line 2\)"),
    ("data: {image_size: 64}\ndata: {batch_size: 8}\n", "duplicate key 'data'"),
    ("data:\n  1: 2\n  foo: 3\n", "unknown key 'data.1'"),  # keys that YAML reads as a number or null
    ("~: 1\ndata: {}\n", "unknown key 'None'"),
])
def test_config_keys_given_twice_or_not_as_names_are_refused(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_yaml_merge_keys_still_work(tmp_path):
    (tmp_path / "c.yaml").write_text("data: &d {batch_size: 8, image_size: 64}\ntrain:\n  max_steps: 3\n"
                                     "optim: {warmup_steps: 2}\nmodel: {attention: false}\n")
    assert load_config(tmp_path / "c.yaml").data.batch_size == 8
    import yaml

    from vito.schema import StrictLoader

    assert yaml.load("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n", Loader=StrictLoader)["d"] == {"b": 3, "c": 2}


def test_pretraining_defaults_are_byols_300_epoch_preset() -> None:
    """docs/pretraining.md: lr 0.3, weight decay 1e-6, EMA 0.99, a 10-epoch warm-up, 300 epochs of 1.28 M clips."""
    from vito.config import IMAGENET_EPOCH
    from vito.pretrain.optim import warmup_length

    for config in (Config(), load_config("vito_r50")):
        assert (config.optim.base_lr, config.optim.weight_decay, config.optim.ema_base) == (0.3, 1e-6, 0.99)
        assert (config.optim.warmup_epochs, config.optim.warmup_steps) == (10.0, None)
        assert config.train.max_steps == 300 * IMAGENET_EPOCH // 4096 == 93835
        assert config.loss.negatives == "cross_view"
    assert warmup_length(Config().optim, 4096) == 10 * 1281167 // 4096 == 3127
    assert warmup_length(Config().optim, 256) == 50045
    assert warmup_length(load_config(None, ["optim.warmup_steps=7"]).optim, 4096) == 7  # steps, when given, win
    assert warmup_length(load_config(None, ["optim.warmup_epochs=0.5"]).optim, 1000) == 640


def test_a_saved_run_without_the_new_keys_continues_as_it_trained(tmp_path) -> None:
    """config.ADDED_KEYS: a run saved before loss.negatives and optim.warmup_epochs existed keeps its negatives and
    its warm-up in steps."""
    import yaml

    saved = Config().to_dict()
    del saved["loss"]["negatives"], saved["optim"]["warmup_epochs"]
    saved["optim"]["warmup_steps"] = 1000
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    config = load_config(tmp_path / "config.yaml", saved_run=True)
    assert config.loss.negatives == "cross_view" and config.optim.warmup_epochs is None
    assert config.optim.warmup_steps == 1000
    with pytest.raises(ConfigError, match=r"optim\.warmup_epochs"):  # read as a new config, it has no warm-up
        load_config(tmp_path / "config.yaml", ["optim.warmup_steps=null"], saved_run=True)
