"""The vectorised distillation batcher gives exactly the batches of the word-by-word one."""

from __future__ import annotations

import random
import threading

import datasets
import numpy as np
import pytest
import torch
from tiny import make_unigram_tokenizer, make_wordpiece_tokenizer, tiny_words

from xdistil.batching import IGNORE_INDEX, Batch, TransferBatcher
from xdistil.data.align import WindowEncoder, collate

C, DIMS, LAYER = 7, (8, 5), 6  # labels; hidden sizes of the two teachers; the stored layer


class ReferenceBatcher:
    """The word-by-word batcher xdistil used before `xdistil.batching` (stages.TransferBatcher), kept as
    the reference: nested loops over sentences, words and teachers."""

    def __init__(self, ds, tokenizer, max_length, teachers, n_labels, layer):
        self.ds = ds.with_format("numpy")
        self.enc = WindowEncoder(tokenizer, max_length)
        self.ids, self.K, self.C, self.layer = list(teachers), len(teachers), n_labels, layer

    def __call__(self, idx, need_hidden):
        rows = self.ds[list(idx)]
        words = [list(w) for w in rows["words"]]
        pieces = self.enc.encode(words)
        inputs = collate(pieces, self.enc.specials.pad_id)
        sent = np.concatenate([np.full(len(p.words), p.sent) for p in pieces])
        word = np.concatenate([np.arange(p.words.start, p.words.stop) for p in pieces])
        gold = torch.full((len(sent),), IGNORE_INDEX, dtype=torch.long)
        for j, (s, w) in enumerate(zip(sent, word, strict=True)):
            g = rows["gold"][s]
            if len(g):
                gold[j] = int(g[w])
        tags, logits, hidden = [], [], []
        for k in self.ids:
            lg = [np.asarray(x, dtype=np.float32).reshape(-1, self.C) for x in rows[f"t{k}_logits"]]
            logits.append(torch.from_numpy(np.stack([lg[s][w] for s, w in zip(sent, word, strict=True)])))
            tg = rows[f"t{k}_tags"]
            tags.append(torch.tensor([int(tg[s][w]) for s, w in zip(sent, word, strict=True)]))
            if need_hidden:
                hs = [np.asarray(x, dtype=np.float32).reshape(len(words[i]), -1)
                      for i, x in enumerate(rows[f"t{k}_h{self.layer}"])]
                hidden.append(torch.from_numpy(np.stack([hs[s][w] for s, w in zip(sent, word, strict=True)])))
        return Batch(inputs, gold, torch.stack(tags), torch.stack(logits), hidden)


def labeled_set(tmp_path, n: int = 120, seed: int = 0):
    """A labeled transfer set as `xdistil.labeling` writes it (two teachers, random values), saved in two
    chunks and read back memory-mapped: short and long sentences (several windows), words the
    tokenizer turns into nothing (""), rows with and without gold tags."""
    rng = random.Random(seed)
    vocab = tiny_words(300, seed=seed) + ["", "東京", "x"]
    np_rng = np.random.default_rng(seed)
    cols = {k: [] for k in ["words", "lang", "split", "source", "gold"]}
    for k in range(len(DIMS)):
        cols |= {f"t{k}_tags": [], f"t{k}_logits": [], f"t{k}_h{LAYER}": []}
    for i in range(n):
        words = [rng.choice(vocab) for _ in range(rng.choice([1, 3, 8, 15, 40]))]
        cols["words"].append(words)
        cols["lang"].append("xx")
        cols["split"].append("labeled" if i % 3 == 0 else "transfer")
        cols["source"].append("test")
        cols["gold"].append([rng.randrange(C) for _ in words] if i % 3 == 0 else [])
        for k, d in enumerate(DIMS):
            logits = np_rng.normal(size=(len(words), C)).astype(np.float32)
            cols[f"t{k}_tags"].append(logits.argmax(-1).tolist())
            cols[f"t{k}_logits"].append(logits.reshape(-1))
            cols[f"t{k}_h{LAYER}"].append(np_rng.normal(size=(len(words), d)).astype(np.float16).reshape(-1))
    full = datasets.Dataset.from_dict(cols)
    parts = []
    for j, (lo, hi) in enumerate([(0, n // 2), (n // 2, n)]):
        full.select(range(lo, hi)).save_to_disk(str(tmp_path / f"chunk{j}"))
        parts.append(datasets.load_from_disk(str(tmp_path / f"chunk{j}")))
    return datasets.concatenate_datasets(parts)


def assert_same(a: Batch, b: Batch) -> None:
    assert a.inputs.keys() == b.inputs.keys()
    for k in a.inputs:
        assert a.inputs[k].dtype == b.inputs[k].dtype and torch.equal(a.inputs[k], b.inputs[k]), k
    for x, y in [(a.gold, b.gold), (a.tags, b.tags), (a.logits, b.logits)]:
        assert x.dtype == y.dtype and torch.equal(x, y)
    assert len(a.hidden) == len(b.hidden)
    for x, y in zip(a.hidden, b.hidden, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    return labeled_set(tmp_path_factory.mktemp("transfer"))


@pytest.mark.parametrize("make_tok", [make_unigram_tokenizer, make_wordpiece_tokenizer])
@pytest.mark.parametrize("teachers", [[0, 1], [1]])
def test_batches_equal_reference(transfer, make_tok, teachers):
    tok = make_tok()
    new = TransferBatcher(transfer, tok, 16, teachers, C, LAYER).build  # 16 pieces: long sentences get windows
    old = ReferenceBatcher(transfer, tok, 16, teachers, C, LAYER)
    rng = random.Random(1)
    rows = list(range(len(transfer)))
    windowed = 0
    for size in (1, 7, 32, len(rows)):
        rng.shuffle(rows)
        for start in range(0, len(rows), size):
            idx = rows[start : start + size]
            for need_hidden in (False, True):
                a, b = new(idx, need_hidden), old(idx, need_hidden)
                assert_same(a, b)
            windowed += a.inputs["input_ids"].shape[0] > len(idx)
    assert windowed  # some batches had a sentence cut into several windows
    assert (b.gold != IGNORE_INDEX).any() and (b.gold == IGNORE_INDEX).any()


def test_planned_batches_are_prefetched_once_each_in_order(transfer, monkeypatch):
    tok = make_unigram_tokenizer()
    batcher = TransferBatcher(transfer, tok, 32, [0, 1], C, LAYER)
    batches = [list(range(i, min(i + 16, len(transfer)))) for i in range(0, len(transfer), 16)][::-1]
    reference = [batcher.build(idx, need_hidden=True) for idx in batches]
    built = []
    real_build = batcher.build

    def build(idx, need_hidden):
        built.append((tuple(idx), threading.current_thread().name))
        return real_build(idx, need_hidden)

    monkeypatch.setattr(batcher, "build", build)
    got = list(batcher.iterate(batches, need_hidden=True))
    for a, b in zip(got, reference, strict=True):
        assert_same(a, b)
    assert sorted(k for k, _ in built) == sorted(tuple(b) for b in batches)  # each built once
    assert sum(name.startswith("xdistil-batches") for _, name in built) == len(batches) - 1

    # one of two processes (DDP) asks for every second planned batch: those are prefetched
    built.clear()
    assert batcher.plan(batches, need_hidden=False) is batches
    mine = batches[1::2]
    for idx in mine:
        assert_same(batcher(idx, need_hidden=False), real_build(idx, need_hidden=False))
    assert sum(name.startswith("xdistil-batches") for k, name in built if k in {tuple(b) for b in mine}) >= \
        len(mine) - 2
    # an unplanned batch (the selection slice) is simply built; close stops the thread
    assert_same(batcher([0, 1, 2], need_hidden=True), real_build([0, 1, 2], need_hidden=True))
    batcher.close()


def test_hidden_without_a_layer_is_an_error(transfer):
    batcher = TransferBatcher(transfer, make_unigram_tokenizer(), 32, [0], C, None)
    assert batcher([0, 1], need_hidden=False).hidden == []
    with pytest.raises(ValueError, match="teacher layer"):
        batcher([0, 1], need_hidden=True)
