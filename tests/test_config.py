"""Config validation (pydantic), the one override function and `to_commented_yaml`."""

import dataclasses
import typing

import pytest
import yaml

from xdistil.config import (
    STAGE_PRESETS,
    ConfigError,
    RunConfig,
    StageSpec,
    apply_overrides,
    field_doc,
    from_dict,
    load_config,
    load_yaml,
    parse_value,
    to_commented_yaml,
    to_dict,
)


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, raw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_yaml_strings_become_typed_values():
    # `1e-3` without a dot is a string to YAML 1.1; "2" an epoch count written as text
    cfg = from_dict(RunConfig, yaml.safe_load("teacher: {lr: 1e-3, epochs: '2', freeze_embeddings: 'no'}\n"
                                              "data: {languages: de, labeled_budget: '300'}"))
    assert cfg.teacher.lr == pytest.approx(1e-3) and isinstance(cfg.teacher.lr, float)
    assert cfg.teacher.epochs == 2.0
    assert cfg.teacher.freeze_embeddings is False  # "no" must never become True
    assert cfg.data.languages == ["de"]  # never ["d", "e"]
    assert cfg.data.labeled_budget == 300
    assert from_dict(RunConfig, {"data": {"languages": "de, ar"}}).data.languages == ["de", "ar"]
    assert from_dict(RunConfig, {"transfer": {"layers": 4}}).transfer.layers == [4]


@pytest.mark.parametrize("raw, key, words", [
    ({"teacher": {"lr": "fast"}}, "teacher.lr", "number"),
    ({"teacher": {"freeze_embeddings": "maybe"}}, "teacher.freeze_embeddings", "boolean"),
    ({"data": {"labeled_budget": 2.5}}, "data.labeled_budget", "integer"),
    ({"data": {"languages": [False]}}, "data.languages[0]", "quote"),  # YAML's `no` (Norwegian) is False
    ({"teacher": {"epoch": 3}}, "teacher", "unknown key(s) ['epoch']; known:"),
    ({"tacher": {}}, "config", "unknown key(s) ['tacher']"),
    ({"data": {"labeled_budget": 10, "val_size": 20}}, "data", "val_size"),
    ({"transfer": {"hidden_dtype": "int8"}}, "transfer.hidden_dtype", "float16"),
    ({"steps": ["teacher", "lable"]}, "steps[1]", "'label'"),
    ({"data": "de"}, "data", "dictionary"),
])
def test_errors_name_the_dotted_key(raw, key, words):
    msg = error_of(raw)
    assert msg.startswith(f"{key}: ") and words in msg, msg


@pytest.mark.parametrize("stages, key, words", [
    ("hard,bogus", "distill.stages", "comma list"),
    ("stagd", "distill.stages", "preset"),
    ([{"name": "a", "losses": {"gld": 1.0}}], "distill.stages[0].losses.gld", "'gold'"),
    ([{"name": "a", "losses": {"gold": 1.0}, "epoch": 2}], "distill.stages[0]", "unknown key(s) ['epoch']"),
    ([{"name": "a", "losses": {}}], "distill.stages[0]", "non-empty"),
    (["hard", {"name": "b", "losses": {"soft": 1.0}, "lr": -1}], "distill.stages[1]", "positive"),
    ([{"losses": {"gold": 1.0}}], "distill.stages[0].name", "missing"),
    ([{"name": "a", "losses": {"gold": 1.0}, "average": 1.0}], "distill.stages[0]", "decay in [0, 1)"),
])
def test_stage_specs_are_validated_when_the_config_is_read(stages, key, words):
    msg = error_of({"distill": {"stages": stages}})
    assert msg.startswith(f"{key}: ") and words in msg, msg


def test_stage_forms():
    cfg = from_dict(RunConfig, {"distill": {"stages": "hard,soft"}})
    assert [s.name for s in cfg.distill.resolved_stages()] == ["hard", "soft"]
    mixed = from_dict(RunConfig, {"distill": {"stages": ["gold", {"name": "x", "losses": {"soft": 2}}]}})
    assert all(isinstance(s, StageSpec) for s in mixed.distill.stages)
    assert mixed.distill.stages[1].losses == {"soft": 2.0}
    assert from_dict(RunConfig, {"distill": {"stages": "xtremedistil"}}).distill.resolved_stages()[2].data == "labeled"


def test_every_field_has_a_one_line_doc():
    def walk(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert field_doc(cls, f.name), f"{cls.__name__}.{f.name} has no docstring"
            assert "\n" not in field_doc(cls, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name])
    walk(RunConfig)
    walk(StageSpec)


def test_apply_overrides_forms():
    base = {"teacher": {"lr": 1e-4, "epochs": 2}, "student": {"arch": "bilstm"}}
    out = apply_overrides(base, {"teacher.lr": 3e-4, "student": {"num_layers": 2}, "data.files": {"de": {}}})
    assert out["teacher"] == {"lr": 3e-4, "epochs": 2}
    assert out["student"] == {"arch": "bilstm", "num_layers": 2}  # merged into the section, not replaced
    assert out["data"] == {"files": {"de": {}}}
    assert base == {"teacher": {"lr": 1e-4, "epochs": 2}, "student": {"arch": "bilstm"}}  # input untouched
    seq = apply_overrides(base, ["teacher.epochs=3", "data.languages=[de, ar]", "distill.stages=hard,soft",
                                 "data.root=null"])
    assert seq["teacher"]["epochs"] == "3" and seq["data"] == {"languages": ["de", "ar"], "root": None}
    cfg = from_dict(RunConfig, seq)
    assert cfg.teacher.epochs == 3.0 and [s.name for s in cfg.distill.resolved_stages()] == ["hard", "soft"]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["teacher.lr"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"teacher": {"lr": 1}}, ["teacher.lr.x=1"])
    # a list replaces (a stage list is never merged item by item)
    assert apply_overrides({"distill": {"stages": ["hard"]}}, {"distill.stages": ["soft"]})["distill"]["stages"] == \
        ["soft"]


def test_parse_value():
    assert parse_value("[4, 6]") == [4, 6] and parse_value("{gold: 1}") == {"gold": 1}
    assert parse_value("no") == "no"  # stays a string: a language code, or a bool for validation to read
    assert parse_value("null") is None and parse_value("1e-3") == "1e-3"
    with pytest.raises(ConfigError, match="YAML"):
        parse_value("[unclosed")


def test_load_config_and_yaml_errors(tmp_path):
    cfg = load_config("demo", ["student.hidden_dim=64", "data.languages=de"])
    assert cfg.student.hidden_dim == 64 and cfg.data.languages == ["de"]
    assert cfg.data.labeled_budget == load_yaml("demo")["data"]["labeled_budget"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  lr: [1e-3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match="preset: .*demo"):
        load_yaml("no-such-preset")


@pytest.mark.parametrize("source", [None, "demo", "stages"])
def test_commented_yaml_reads_back_to_the_same_config(source):
    if source is None:
        cfg = RunConfig()
    elif source == "stages":
        cfg = from_dict(RunConfig, {"distill": {"stages": [{"name": "a", "losses": {"gold": 1}, "data": "labeled"},
                                                           {"name": "b", "losses": {"soft": 1}, "lr": 1e-3}]},
                                    "data": {"languages": ["no", "de"], "files": {"no": {"train": ["x.tsv"]}}}})
    else:
        cfg = load_config(source)
    text = to_commented_yaml(cfg)
    assert from_dict(RunConfig, yaml.safe_load(text)) == cfg
    assert to_dict(from_dict(RunConfig, yaml.safe_load(text))) == to_dict(cfg)
    assert f"# {field_doc(type(cfg.teacher), 'lr')}\n  lr:" in text
    if source is None:
        assert "# preset staged = " + ", ".join(s["name"] for s in STAGE_PRESETS["staged"]) in text
