"""MT-BERT: co-finetuning with a shared head, mixed tokenizers and hidden sizes, labeling
and distilling with several teachers, the validation-slice teacher weights."""

import json

import pytest
import torch
from faults import Interrupt, before_step, interrupt_at
from test_pipeline import small_cfg
from tiny import make_tiny_teacher, tiny_sentences

from xdistil import DEFAULT_LABELS


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two tiny teachers that differ in tokenizer (Unigram vs WordPiece) and width (32 vs 48)."""
    tmp = tmp_path_factory.mktemp("sources")
    return [make_tiny_teacher(tmp), make_tiny_teacher(tmp, seed=1, hidden_size=48, tokenizer="wordpiece")]


def _cfg(tmp_path, sources, **over):
    cfg = small_cfg(tmp_path, sources[0], **over)
    cfg.teacher.models = [str(s) for s in sources]
    cfg.precision = "fp32"  # labeled logits compared with fp32 forward passes below
    return cfg


def test_shared_head_folds_exactly_into_each_teacher(two_sources):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from xdistil.data.align import WindowEncoder, collate
    from xdistil.teachers import CoTeachers

    models = [AutoModelForTokenClassification.from_pretrained(s) for s in two_sources]
    co = CoTeachers(models, len(DEFAULT_LABELS)).eval()
    assert isinstance(co.adapters[0], torch.nn.Identity) and isinstance(co.adapters[1], torch.nn.Linear)
    assert co.adapters[1].in_features == 48 and co.adapters[1].out_features == 32
    torch.nn.init.normal_(co.head.weight)
    torch.nn.init.normal_(co.adapters[1].weight)
    co.fold()
    words = tiny_sentences(6, seed=3)
    for m, src, adapter in zip(models, two_sources, co.adapters, strict=True):
        enc = WindowEncoder(AutoTokenizer.from_pretrained(src), 24)
        b = collate(enc.encode(words), enc.specials.pad_id)
        with torch.no_grad():
            alone = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            h = m.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])[0]
            shared = co.head(adapter(h))
        torch.testing.assert_close(alone, shared, rtol=1e-4, atol=1e-4)


def test_cofinetune_cli_saves_each_teacher_alone(tmp_path, two_sources, capsys):
    import yaml
    from transformers import AutoModelForTokenClassification

    from xdistil.cli import main
    from xdistil.config import to_dict
    from xdistil.evaluate import evaluate_dev
    from xdistil.models import DONE_MARKER, GROUP_MARKER, teacher_dirs

    cfg = small_cfg(tmp_path, two_sources[0], teacher={"epochs": 8, "lr": 3e-3, "head_lr": 1e-2})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "teachers"
    assert main(["teacher", "train", "--config", str(tmp_path / "cfg.yaml"), "--teacher", str(two_sources[0]),
                 "--teacher", str(two_sources[1]), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    group = json.loads((out / GROUP_MARKER).read_text())
    assert group["members"] == ["teacher1-tiny-teacher-bert", "teacher2-tiny-teacher-bert-wordpiece-48"]
    assert group["adapters"] == ["Identity", "Linear"] and group["shared_head"] is True
    members = teacher_dirs(out)
    for d, src in zip(members, two_sources, strict=True):
        info = json.loads((d / DONE_MARKER).read_text())
        assert info["model"] == str(src) and len(info["co_finetuned_with"]) == 1
        model = AutoModelForTokenClassification.from_pretrained(d)  # a plain HF folder, usable alone
        assert model.config.hidden_size == (32 if d == members[0] else 48)
        m = evaluate_dev(d, cfg, progress=False)
        assert m["dev"]["xx"]["f1"] > 25, (d.name, m["dev"])  # both learned through the shared head
        assert f"{d.name} avg: dev F1" in printed
    assert not (out / "checkpoint").exists()
    # the second teacher's own tokenizer came along (WordPiece, not the first teacher's Unigram)
    assert json.loads((members[1] / "tokenizer.json").read_text())["model"]["type"] == "WordPiece"


def test_cofinetune_resume_matches_uninterrupted(tmp_path, two_sources):
    from safetensors.torch import load_file

    from xdistil.models import teacher_dirs
    from xdistil.teachers import train_teacher

    cfg = _cfg(tmp_path, two_sources)
    straight = teacher_dirs(train_teacher(cfg, tmp_path / "straight", progress=False))
    with pytest.raises(Interrupt), before_step(interrupt_at(8)):  # after the checkpoint at step 6
        train_teacher(cfg, tmp_path / "resumed", progress=False)
    resumed = teacher_dirs(train_teacher(cfg, tmp_path / "resumed", progress=False))
    for a_dir, b_dir in zip(straight, resumed, strict=True):
        a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=f"{b_dir.name}: {k} differs after resume")


@pytest.fixture(scope="module")
def co_run(tmp_path_factory, two_sources):
    from xdistil.teachers import train_teacher

    tmp = tmp_path_factory.mktemp("co")
    cfg = _cfg(tmp, two_sources, teacher={"epochs": 3, "lr": 3e-3, "head_lr": 1e-2})
    return cfg, train_teacher(cfg, tmp / "teachers", progress=False), tmp


def test_label_and_distill_with_two_teachers(co_run, capsys):
    import yaml

    from xdistil.cli import main
    from xdistil.config import to_dict
    from xdistil.labeling import load_transfer
    from xdistil.models import teacher_dirs
    from xdistil.taggers import load_tagger, word_logits

    cfg, group, tmp = co_run
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["label", "--config", str(tmp / "cfg.yaml"), "--teacher-dir", str(group), "--out",
                 str(tmp / "transfer"), "-q"]) == 0
    ds, manifest = load_transfer(tmp / "transfer")
    assert [t["path"] for t in manifest["teachers"]] == [str(d) for d in teacher_dirs(group)]
    assert manifest["hidden_sizes"] == [32, 48]
    # each teacher's outputs are aligned at word level through its own tokenizer
    rows = ds.select(range(5))
    for k, d in enumerate(teacher_dirs(group)):
        want, hidden = word_logits(load_tagger(d), [list(w) for w in rows["words"]], hidden_layers=(2,))
        for i in range(5):
            got = torch.tensor(rows[i][f"t{k}_logits"]).view(-1, len(DEFAULT_LABELS))
            assert got.shape[0] == len(rows[i]["words"])
            torch.testing.assert_close(got, want[i].float(), rtol=1e-4, atol=1e-4)
            assert len(rows[i][f"t{k}_h2"]) == len(rows[i]["words"]) * (32, 48)[k]

    stages = "[{name: mix, losses: {soft: 1.0, hidden: 1.0, gold: 1.0}, epochs: 1, unfreeze: false}]"
    raw = to_dict(cfg)
    raw["distill"]["stages"] = yaml.safe_load(stages)
    (tmp / "d.yaml").write_text(yaml.safe_dump(raw))
    assert main(["distill", "--config", str(tmp / "d.yaml"), "--teacher-dir", str(group), "--transfer",
                 str(tmp / "transfer"), "--out", str(tmp / "distill"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "teacher1" in out and "teacher2" in out and "stage1-mix" in out
    metrics = json.loads((tmp / "distill/distill/metrics.json").read_text())
    t = metrics["teachers"]
    assert t["weighting"] == "mtbert" and len(t["selection_task_loss"]) == 2
    inv = [1 / (1 + x) for x in t["selection_task_loss"]]
    assert t["weights_without_gold"] == pytest.approx([w / sum(inv) for w in inv], abs=1e-3)
    ckpt = load_file_keys(tmp / "distill/distill/checkpoint/weights.safetensors")
    # one learned projection per teacher, to that teacher's width
    assert ckpt["projections.0.linear.weight"][0] == 32 and ckpt["projections.1.linear.weight"][0] == 48


def load_file_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_batches_without_gold_use_the_validation_weights():
    from xdistil.config import MatchSpec, StageSpec
    from xdistil.losses import soft_loss
    from xdistil.stages import Batch, stage_loss

    torch.manual_seed(0)
    N, C = 10, len(DEFAULT_LABELS)
    student = torch.randn(N, C)
    teachers = torch.randn(2, N, C)
    spec = StageSpec(name="s", losses={"soft": 1.0})
    no_gold = Batch({}, torch.full((N,), -100), teachers.argmax(-1), teachers, [])
    fallback = torch.tensor([0.9, 0.1])
    mask = torch.ones(N, dtype=torch.bool)
    match = MatchSpec(student_layer=0)
    total, _ = stage_loss(None, spec, student, no_gold, match, "mtbert", fallback=fallback)
    torch.testing.assert_close(total, soft_loss(student, teachers, mask, fallback, spec.soft_kind, spec.temperature))
    uniform, _ = stage_loss(None, spec, student, no_gold, match, "mtbert")
    torch.testing.assert_close(uniform, soft_loss(student, teachers, mask, torch.tensor([0.5, 0.5]), spec.soft_kind,
                                                  spec.temperature))
    assert not torch.allclose(total, uniform)
    # with gold words the batch's own task losses decide: teacher 0 agrees with the gold tags
    gold = teachers[0].argmax(-1)
    with_gold = Batch({}, gold, teachers.argmax(-1), teachers, [])
    got, _ = stage_loss(None, spec, student, with_gold, match, "best", fallback=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(got, soft_loss(student, teachers, mask, torch.tensor([1.0, 0.0]), spec.soft_kind,
                                              spec.temperature))


def test_single_teacher_student_from_a_multi_teacher_set(co_run):
    """distill.teachers: [1] learns from the second teacher only, with its vocabulary."""
    from xdistil.config import RunConfig, from_dict, to_dict
    from xdistil.labeling import label_transfer
    from xdistil.models import teacher_dirs
    from xdistil.stages import distill
    from xdistil.taggers import load_tagger

    cfg, group, tmp = co_run
    transfer = label_transfer(cfg, teacher_dirs(group), tmp / "transfer", progress=False)
    raw = to_dict(cfg)
    raw["distill"].update(teachers=[1], stages=[{"name": "soft", "losses": {"soft": 1.0, "hidden": 1.0},
                                                  "epochs": 1, "unfreeze": False}])
    one = from_dict(RunConfig, raw)
    dirs = distill(one, transfer, group, tmp / "single-2", progress=False)
    metrics = json.loads((tmp / "single-2/metrics.json").read_text())
    assert metrics["teachers"]["ids"] == [1] and metrics["teachers"]["weights_without_gold"] == [1.0]
    keys = load_file_keys(tmp / "single-2/checkpoint/weights.safetensors")
    assert keys["projections.0.linear.weight"][0] == 48 and "projections.1.linear.weight" not in keys
    student = load_tagger(dirs[-1])
    assert json.loads(student.tokenizer.backend_tokenizer.to_str())["model"]["type"] == "WordPiece"
    raw["distill"]["teachers"] = [2]
    with pytest.raises(ValueError, match="teachers 0..1"):
        distill(from_dict(RunConfig, raw), transfer, group, tmp / "bad", progress=False)
