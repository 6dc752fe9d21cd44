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
    with pytest.raises(DataError, match=r"latin1.tsv:1: not valid UTF-8"):
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
