"""Teacher loading (any HF model or bare encoder), windows at model level, evaluate CLI."""

import json

import pytest
import torch
from tiny import make_tiny_teacher, make_unigram_tokenizer, tiny_sentences, tiny_words

from xdistil import DEFAULT_LABELS


def test_bare_encoder_gets_a_new_head(tmp_path):
    from transformers import BertConfig, BertModel

    tok = make_unigram_tokenizer(tiny_sentences())
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, pad_token_id=tok.pad_token_id), add_pooling_layer=False)
    enc.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    from xdistil.teachers import load_teacher

    model, tokenizer = load_teacher(str(tmp_path / "enc"), list(DEFAULT_LABELS))
    assert model.config.num_labels == 7 and model.config.id2label[3] == "B-LOC"
    # the encoder weights were loaded, not re-initialised
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, enc.embeddings.word_embeddings.weight)


def test_existing_head_is_kept_when_labels_match(tmp_path):
    from transformers import AutoModelForTokenClassification

    from xdistil.teachers import load_teacher

    path = make_tiny_teacher(tmp_path)
    ref = AutoModelForTokenClassification.from_pretrained(path)
    model, _ = load_teacher(str(path), list(DEFAULT_LABELS))
    torch.testing.assert_close(model.classifier.weight, ref.classifier.weight)
    other, _ = load_teacher(str(path), ["O", "B-X", "I-X"])
    assert other.classifier.weight.shape[0] == 3


def test_thousand_word_sentence_every_word_predicted(tmp_path):
    """No truncation: a 1,000-word sentence through a 24-piece model gets 1,000 predictions,
    and each word's logits equal those of the window that keeps it."""
    from xdistil.data.align import WindowEncoder, collate
    from xdistil.taggers import load_tagger, predict_tags, word_logits

    tagger = load_tagger(make_tiny_teacher(tmp_path), max_length=24)
    words = tiny_words(1000, seed=5)
    tags = predict_tags(tagger, [words, words[:3]])
    assert len(tags[0]) == 1000 and len(tags[1]) == 3
    logits, _ = word_logits(tagger, [words])
    enc = WindowEncoder(tagger.tokenizer, 24)
    pieces = enc.encode([words])
    assert len(pieces) > 40  # really windowed
    covered = []
    with torch.no_grad():
        for p in pieces[:: max(1, len(pieces) // 5)]:
            b = collate([p], enc.specials.pad_id)
            out = tagger.module(b["input_ids"], b["attention_mask"], b["word_mask"])
            torch.testing.assert_close(logits[0][p.words.start : p.words.stop], out.word_logits)
    for p in pieces:
        covered += list(p.words)
    assert covered == list(range(1000))


def test_evaluate_cli_on_model_and_file(tmp_path, capsys):
    from synth import synth_sentences, write_conll

    from xdistil.cli import main
    from xdistil.data.readers import read_conll
    from xdistil.evaluate import score
    from xdistil.taggers import load_tagger, predict_tags

    path = make_tiny_teacher(tmp_path)
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(30, 9))
    assert main(["evaluate", str(path), str(dev), "--json", "-q"]) == 0
    got = json.loads(capsys.readouterr().out)[str(dev)]
    sents = read_conll(dev)
    want = score([s.tags for s in sents], predict_tags(load_tagger(path), sents))
    assert got["f1"] == pytest.approx(want["f1"]) and got["sentences"] == 30
    assert main(["evaluate", str(path), str(dev), "-q"]) == 0
    assert "F1" in capsys.readouterr().out


def test_hf_dataset_loader_on_local_dataset(tmp_path):
    import datasets

    from xdistil.data.readers import load_hf_dataset

    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(DEFAULT_LABELS)))})
    ds = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(
        {"tokens": [["Angela", "Merkel", "spricht"]], "ner_tags": [[1, 2, 0]]}, features=feats)})
    ds.save_to_disk(str(tmp_path / "wikiann-like"))
    sents = list(load_hf_dataset(str(tmp_path / "wikiann-like"), None, "validation"))
    assert sents[0].words == ["Angela", "Merkel", "spricht"] and sents[0].tags == ["B-PER", "I-PER", "O"]


def test_data_root_order(tmp_path, monkeypatch):
    from xdistil.data.roots import ENV_VAR, resolve_data_root

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv(ENV_VAR, str(a))
    assert resolve_data_root(str(b)) == a
    monkeypatch.delenv(ENV_VAR)
    assert resolve_data_root(str(b)) == b
    with pytest.raises(FileNotFoundError, match="config data.root"):
        resolve_data_root(str(tmp_path / "missing"))
    # with nothing set, ../shared/data beside the repo when it exists (as in CI), else the hub (None)
    root = resolve_data_root(None)
    assert root is None or (root.name == "data" and root.parent.name == "shared")
