"""Tiny random teachers and tokenizers for tests: built from configs, never downloaded.

``make_tiny_teacher(tmp_path)`` writes a folder that the ordinary HF code loads:
``AutoModelForTokenClassification.from_pretrained(path)`` gives a 2-layer, 32-wide
``BertForTokenClassification`` (or XLM-R) with random weights and ``AutoTokenizer.from_pretrained(path)``
an XLM-R-like SentencePiece Unigram tokenizer (Metaspace, ``<s> $A </s>``, pad id 1)
trained on `tiny_sentences`. Import it from tests as ``from tiny import ...``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from xdistil import DEFAULT_LABELS

# Syllables from a few scripts, with accents, so normalisation and multi-byte characters show up.
_SYLLABLES = ("ka ri mo ne la to pe an or is be qu st x sü zé çà ñó ду ми ра ко νε στ 東 京 العر بي").split()


def tiny_words(n: int = 1000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def tiny_sentences(n: int = 400, seed: int = 0, vocab: Sequence[str] | None = None) -> list[list[str]]:
    """Sentences (lists of words) over ``vocab`` (default: `tiny_words` with the same seed)."""
    rng = random.Random(seed + 1)
    words = list(vocab) if vocab is not None else tiny_words(seed=seed)
    return [[rng.choice(words) for _ in range(rng.randint(2, 12))] for _ in range(n)]


def make_unigram_tokenizer(sentences: Sequence[Sequence[str]] | None = None, vocab_size: int = 600):
    """XLM-R-like fast tokenizer: <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask> last; NFKC, Metaspace, <s> $A </s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sentences = tiny_sentences() if sentences is None else sentences
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator([" ".join(s) for s in sentences], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",  # not in the trained vocabulary: added last, as in XLM-R
        model_max_length=128,
    )


def make_wordpiece_tokenizer(sentences: Sequence[Sequence[str]] | None = None, vocab_size: int = 600):
    """BERT-like fast tokenizer: [PAD]=0 [UNK]=1, pieces, then [CLS] [SEP] [MASK]; [CLS] $A [SEP].

    [CLS]/[SEP] come after the pieces so that reducing the vocabulary renumbers them
    (and the post-processor that inserts them).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sentences = tiny_sentences() if sentences is None else sentences
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]"], show_progress=False
    )
    tok.train_from_iterator([" ".join(s) for s in sentences], trainer)
    tok.add_special_tokens(["[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def make_tiny_teacher(
    tmp_path: Path,
    labels: Sequence[str] = DEFAULT_LABELS,
    num_layers: int = 2,
    seed: int = 0,
    model_type: str = "bert",
    hidden_size: int = 32,
    tokenizer: str = "unigram",
) -> Path:
    """Save a tiny random token classifier + tokenizer under ``tmp_path``.

    ``model_type``: "bert" (like the e5 teacher) or "xlm-roberta"; ``tokenizer``: "unigram"
    (XLM-R-like) or "wordpiece" (BERT-like, as the MiniLM teacher).
    """
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    name = f"tiny-teacher-{model_type}" + ("" if (hidden_size, tokenizer) == (32, "unigram") else
                                           f"-{tokenizer}-{hidden_size}")
    path = Path(tmp_path) / name
    make = make_unigram_tokenizer if tokenizer == "unigram" else make_wordpiece_tokenizer
    tokenizer = make(tiny_sentences(seed=seed))
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_run_config(files: dict, teacher, stages: list[dict]) -> dict:
    """A run config (raw) that trains, labels and distils in seconds: the synthetic language
    ``xx`` of ``files`` (`synth.synth_files`), the tiny ``teacher`` (a folder) and ``stages``."""
    return {
        "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20, "files": files},
        "teacher": {"model": str(teacher), "epochs": 1, "min_steps": 0, "min_selection_f1": 0, "batch_size": 16,
                    "lr": 1e-3, "max_length": 24, "freeze_embeddings": False},
        "transfer": {"layers": [1], "chunk_size": 40, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": stages, "match": {"teacher_layer": 1}, "max_steps_per_epoch": 2},
    }


def import_blocker(*packages: str, why: str = "it must not be needed") -> str:
    """Python source that makes importing any of ``packages`` (top-level names) raise
    ImportError; put it first in a ``python -c`` script to prove code runs without them."""
    return (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(packages)!r}:\n"
        f"            raise ImportError(name + {' is blocked: ' + why!r})\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
