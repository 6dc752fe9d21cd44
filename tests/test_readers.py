import gzip

import pytest

from xdistil.data.readers import (
    DataError,
    FileStats,
    read_conll,
    read_raw,
    read_tokens,
    sniff_format,
    split_words,
)

TYPES = {"PER", "LOC", "ORG"}


def write(path, text: str, gz=False, encoding="utf-8"):
    data = text.encode(encoding) if isinstance(text, str) else text
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_conll_tab_space_gz_crlf_bom(tmp_path):
    text = "\ufeffBerlin\tB-LOC\r\nist\tO\r\n\r\nAngela\tB-PER\r\nMerkel\tI-PER\r\n"
    for i, (t, gz) in enumerate([(text, False), (text, True), (text.replace("\t", " "), True)]):
        # the gz one is named .txt to prove gzip is detected from bytes, not the name
        p = write(tmp_path / f"f{i}.txt", t, gz=gz)
        sents = read_conll(p, TYPES)
        assert [s.words for s in sents] == [["Berlin", "ist"], ["Angela", "Merkel"]]
        assert [s.tags for s in sents] == [["B-LOC", "O"], ["B-PER", "I-PER"]]


def test_last_column_is_the_tag(tmp_path):
    p = write(tmp_path / "f.tsv", "Paris\tNNP\tB-LOC\nrocks\tVBZ\tO\n")
    assert read_conll(p, TYPES)[0].tags == ["B-LOC", "O"]


@pytest.mark.parametrize(
    "content,line,msg",
    [
        ("a\tO\nb\tO\tX\n", 2, "wrong column count"),
        ("a\tO\nb\tB-MISC\n", 2, "outside the label set"),
        ("a\tO\n\nb\tPER\n", 3, "not IOB2"),
        ("a\tO\nb\tS-PER\n", 2, "not IOB2"),
        ("a\tO\nlonely\n", 2, "at least 2 columns"),
    ],
)
def test_errors_name_file_and_line(tmp_path, content, line, msg):
    p = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as e:
        read_conll(p, TYPES)
    assert e.value.line == line and msg in str(e.value) and f"bad.tsv:{line}" in str(e.value)


def test_non_utf8_and_empty(tmp_path):
    p = write(tmp_path / "latin1.tsv", "caf\xe9\tO\n".encode("latin-1") + b"ok\tO\n")
    with pytest.raises(DataError, match=r"latin1.tsv:1: not UTF-8 text"):
        read_conll(p, TYPES)
    p = write(tmp_path / "late.tsv", b"ok\tO\n\nbad\xff\tO\n")
    with pytest.raises(DataError, match=r"late.tsv:3"):
        read_conll(p, TYPES)
    for name, content in [("empty.tsv", ""), ("blank.tsv", "\n\n  \n")]:
        with pytest.raises(DataError, match="empty file"):
            read_conll(write(tmp_path / name, content), TYPES)
    with pytest.raises(DataError, match="file not found"):
        read_conll(tmp_path / "missing.tsv", TYPES)


def test_repair_and_strict(tmp_path, caplog):
    p = write(tmp_path / "f.tsv", "a\tO\nb\tI-PER\nc\tI-LOC\n\nd\tI-ORG\n")
    stats = FileStats()
    sents = read_conll(p, TYPES, stats=stats)
    assert sents[0].tags == ["O", "B-PER", "B-LOC"] and sents[1].tags == ["B-ORG"]
    assert stats.repaired == 3 and "repaired 3" in caplog.text
    with pytest.raises(DataError, match=r"f.tsv:2: I-PER follows O"):
        read_conll(p, TYPES, strict=True)


def test_tag_map_drops_a_type(tmp_path):
    p = write(tmp_path / "f.tsv", "a\tB-OTH\nb\tI-OTH\nc\tB-PER\n")
    assert read_conll(p, TYPES, tag_map={"OTH": "O"})[0].tags == ["O", "O", "B-PER"]


def test_tokens_and_raw(tmp_path):
    p = write(tmp_path / "t.gz", "Hallo\nWelt\n\n\nNoch\neins\n", gz=True)
    assert [s.words for s in read_tokens(p)] == [["Hallo", "Welt"], ["Noch", "eins"]]
    p = write(tmp_path / "raw.txt", "Tom's car isn't here, is it?\n\nमेरा नाम राम है।\n")
    sents = list(read_raw(p))
    assert sents[0].words == ["Tom's", "car", "isn't", "here", ",", "is", "it", "?"]
    assert sents[1].words == ["मेरा", "नाम", "राम", "है", "।"]
    assert sents[1].where.endswith("raw.txt:3")


def test_split_words_scripts():
    assert split_words("ذهب أحمد إلى القاهرة.") == ["ذهب", "أحمد", "إلى", "القاهرة", "."]
    assert split_words("«Привет», сказал он") == ["«", "Привет", "»", ",", "сказал", "он"]
    assert split_words("state-of-the-art U.S. 3.5") == ["state-of-the-art", "U.S", ".", "3.5"]
    assert split_words("தமிழ் நாடு") == ["தமிழ்", "நாடு"]


def test_sniff(tmp_path):
    assert sniff_format(write(tmp_path / "a", "x\tO\ny\tB-PER\n")) == "conll"
    assert sniff_format(write(tmp_path / "b", "x\ny\n\nz\n")) == "tokens"
    assert sniff_format(write(tmp_path / "c", "Ein ganzer Satz.\nNoch einer hier\n")) == "raw"


def test_real_files(shared_data):
    de = read_conll(shared_data / "wikiann/de/train.tsv.gz", TYPES, limit=50)
    assert len(de) == 50 and all(len(s.words) == len(s.tags) for s in de)
    skipped = read_conll(shared_data / "wikiann/de/train.tsv.gz", TYPES, skip=50, limit=1)
    assert skipped[0].words != de[0].words
    ar = list(read_tokens(shared_data / "wikiann/ar/unlabeled.tokens.gz", limit=5))
    assert len(ar) == 5 and all(ar[i].words for i in range(5))


# ---- issue 13: malformed labeled files, line ends, sniffing, budgets -------------------------


@pytest.mark.parametrize(
    "content,line,msg",
    [
        ("Angela\tPERSON\nMerkel\tPERSON\n", 1, "'PERSON' is not IOB2"),
        ("Angela\tb-per\nMerkel\ti-per\n", 1, "prefix must be upper case ('B-per')"),
        ("Angela\tB-PER\t\nMerkel\tI-PER\t\n", 1, "empty tag column (a trailing tab"),
        ("Angela\tB-PER\nMerkel\tI-PER\t\n", 2, "wrong column count: 3 columns, the file started with 2 (a trailing"),
        ("Angela\tB-PER\tNNP\nMerkel\tI-PER\n", 1, "'NNP' is not IOB2"),
        ("Angela\tS-PER\n", 1, "BIOES/BILOU"),
    ],
)
def test_malformed_labeled_files_get_one_line(tmp_path, content, line, msg):
    p = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as e:
        read_conll(p)
    text = str(e.value)
    assert text.startswith(f"{p}:{line}: ") and msg in text and "\n" not in text


def test_cr_only_line_ends(tmp_path):
    p = write(tmp_path / "mac.tsv", "Berlin\tB-LOC\rist\tO\r\rAngela\tB-PER\rMerkel\tI-PER\r")
    sents = read_conll(p, TYPES)
    assert [s.tags for s in sents] == [["B-LOC", "O"], ["B-PER", "I-PER"]]
    assert sents[1].where.endswith("mac.tsv:4")
    bad = write(tmp_path / "macbad.tsv", "a\tO\rb\tPERSON\r")
    with pytest.raises(DataError, match=r"macbad.tsv:2: "):
        read_conll(bad)
    assert [s.words for s in read_raw(write(tmp_path / "r.txt", "one two\rthree\r"))] == [["one", "two"], ["three"]]


def test_corrupt_gz_and_directory_are_one_data_error(tmp_path):
    good = gzip.compress(("a\tO\n" * 5000).encode())
    p = write(tmp_path / "cut.tsv.gz", good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip data") as e:
        read_conll(p)
    assert "\n" not in str(e.value)
    flipped = bytearray(good)
    flipped[20:40] = b"\xff" * 20
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        read_conll(write(tmp_path / "flip.tsv.gz", bytes(flipped)))
    with pytest.raises(DataError, match="is a directory"):
        read_conll(tmp_path)


def test_sniff_never_calls_columns_raw(tmp_path):
    for name, content in [("cols", "a\tO\nb\tO\tX\n"), ("person", "Angela PERSON\nMerkel PERSON\nvisited O\n"),
                          ("lower", "Angela\tb-per\n"), ("trail", "Angela\tB-PER\t\n"),
                          ("mixed", "Berlin B-LOC\nist O\nschön O EXTRA\n")]:
        assert sniff_format(write(tmp_path / name, content)) == "conll", name
    assert sniff_format(write(tmp_path / "mac", "x\tO\ry\tB-PER\r")) == "conll"
    assert sniff_format(write(tmp_path / "raw", "Angela Merkel besuchte gestern Berlin.\nEin Satz\n")) == "raw"


def test_labeled_role_is_always_conll_and_budget_says_what_it_used(tmp_path, caplog):
    import logging

    from xdistil.config import DataConfig
    from xdistil.data.sources import budget_split, labeled_sentences, validate_labeled

    # a file that sniffing alone would take for raw text: in a labeled role it is CoNLL, and fails
    raw_like = write(tmp_path / "train.txt", "Angela Merkel besuchte Berlin\nund dann Paris\n")
    cfg = DataConfig(languages=["xx"], labeled_budget=50, val_size=2, files={"xx": {"train": [str(raw_like)]}})
    with pytest.raises(DataError, match=r"train.txt:1: wrong column count|train.txt:1: tag"):
        labeled_sentences("xx", "train", cfg)
    train = write(tmp_path / "train.tsv", "".join(f"w{i}\tB-MISC\n\n" for i in range(10)))
    dev = write(tmp_path / "dev.tsv", "x\tO\ny\tB-DATE\n")
    cfg = DataConfig(languages=["xx"], labeled_budget=50, val_size=2,
                     files={"xx": {"train": [str(train)], "dev": [str(dev)]}})
    assert validate_labeled(cfg) == {"B-MISC": 10, "O": 1, "B-DATE": 1}
    with caplog.at_level(logging.WARNING):
        tr, sel = budget_split("xx", cfg)
    assert (len(tr), len(sel)) == (8, 2)
    assert "labeled_budget is 50 but train has 10 sentences: using all 10 (8 to train" in caplog.text
    bad_dev = write(tmp_path / "bad_dev.tsv", "x\tO\ny\tB-PER\tz\n")
    cfg.files["xx"]["dev"] = [str(bad_dev)]
    with pytest.raises(DataError, match=r"bad_dev.tsv:2: wrong column count"):
        validate_labeled(cfg)


def test_data_check_malformed_files_exit_2_in_one_line(tmp_path, capsys):
    from xdistil.cli import main

    for content in ("Angela\tPERSON\n", "Angela\tb-per\n", "Angela\tB-PER\t\n", "a\tO\nb\tO\tX\n"):
        p = write(tmp_path / "f.tsv", content)
        assert main(["data", "check", str(p), "--any-labels"]) == 2, content
        err = capsys.readouterr().err
        assert f"{p}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_hub_dataset_without_network_is_one_fast_line(monkeypatch):
    from xdistil.data.readers import load_hf_dataset

    with pytest.raises(DataError, match=r"someone/not-cached\[xx/validation\]: cannot load from the hub") as e:
        list(load_hf_dataset("someone/not-cached", "xx", "validation"))  # HF_DATASETS_OFFLINE (conftest)
    assert "HF_DATASETS_OFFLINE is set" in str(e.value) and "\n" not in str(e.value)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: no hub
    with pytest.raises(DataError, match=r"cannot be reached: pass your own files"):
        list(load_hf_dataset("someone/not-cached", "xx", "validation"))


def test_unlabeled_column_file_reads_its_first_column(tmp_path):
    from xdistil.config import DataConfig
    from xdistil.data.readers import read_file
    from xdistil.data.sources import unlabeled_paths

    p = write(tmp_path / "u.tsv", "Berlin\tNNP\nist\tVBZ\n\nschön\tADJ\n")
    cfg = DataConfig(languages=["xx"], files={"xx": {"unlabeled": [str(p)]}})
    assert unlabeled_paths("xx", cfg)[0] == (p, "tokens")
    assert [s.words for s in read_file(p, "tokens")] == [["Berlin", "ist"], ["schön"]]
