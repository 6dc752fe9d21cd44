"""The 41-language registry (languages/, installed as `xdistil_languages`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import xdistil_languages as xl
from xdistil_languages import (
    HubSource,
    RegistryError,
    format_registry,
    get_language,
    load_registry,
    registry_as_dicts,
)

RAHIMI_41 = (
    "af ar bg bn bs ca cs da de el en es et fa fi fr he hi hr hu id it lt lv mk ms nl no "
    "pl pt ro ru sk sl sq sv ta tl tr uk vi"
).split()
HUB_ONLY = {"bs", "ca", "cs", "mk", "sl", "sq"}  # README: no labeled data here at all


def _readme_files() -> set[str]:
    """The files ../shared/data/README.md says exist (its folder and sentence-count tables)."""
    wikiann = "af ar bg bn de el en es et fa fi fr he hi hu id it lt ms nl pl pt ro ru ta tl tr uk vi".split()
    no_unlabeled = {"de", "en", "es", "nl", "pl", "ru"}  # no `unlabeled=` count in the README table
    files = {f"wikiann/{c}/{s}.tsv.gz" for c in wikiann for s in ("train", "dev")}
    files |= {f"wikiann/{c}/unlabeled.tokens.gz" for c in wikiann if c not in no_unlabeled}
    files |= {f"uner/{c}/{s}.tsv.gz" for c in ("da", "hr", "pt", "sk", "sv") for s in ("train", "dev", "test")}
    files |= {"uner/en/dev.tsv.gz", "uner/en/test.tsv.gz"}
    files |= {f"newsner/{c}/{s}.txt.gz" for c in ("lv", "no") for s in ("train", "dev", "test")}
    files |= {f"tatoeba/{c}.txt.gz" for c in RAHIMI_41 if c != "en"} | {"tatoeba/en.from-deu-eng.txt.gz"}
    return files


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared NER data not found at {root} (see shared/data/README.md)")
    return root


# --------------------------------------------------------------------------- contents


def test_registry_holds_exactly_the_41_rahimi_languages():
    registry = load_registry()
    assert sorted(registry) == sorted(RAHIMI_41)
    assert len(registry) == 41
    assert all(code == lang.code for code, lang in registry.items())


def test_every_entry_is_complete():
    for code, lang in load_registry().items():
        assert lang.name.strip() and lang.script.strip(), code
        assert lang.direction in ("ltr", "rtl"), code
        assert lang.in_registry
        assert lang.hub == HubSource("unimelb-nlp/wikiann", code)
        names = {(s.name, s.split) for s in lang.sources}
        assert {("wikiann", "train"), ("wikiann", "dev"), ("tatoeba", "unlabeled")} <= names, code
        for s in lang.sources:
            path = Path(s.path)
            assert not path.is_absolute() and (code in path.parts or path.name.split(".")[0] == code), s


def test_scripts_and_directions():
    registry = load_registry()
    assert {c for c, lang in registry.items() if lang.direction == "rtl"} == {"ar", "fa", "he"}
    expected = {"ru": "Cyrillic", "mk": "Cyrillic", "hi": "Devanagari", "bn": "Bengali", "ta": "Tamil",
                "el": "Greek", "he": "Hebrew", "fa": "Arabic", "vi": "Latin"}
    assert {c: registry[c].script for c in expected} == expected


def test_registry_is_cached_and_read_only():
    a, b = load_registry(), load_registry()
    assert a is not b and a["de"] is b["de"]  # fresh dict, shared entries
    with pytest.raises(TypeError):
        a["da"].overrides["prefer_labeled"] = "wikiann"  # type: ignore[index]
    hash(a["da"])  # frozen dataclasses stay usable as keys


def test_import_does_not_pull_torch():
    code = "import sys, xdistil_languages; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- local data


def test_local_files_match_the_readme(data_root: Path):
    expected = _readme_files()
    local = {
        src.path for lang in load_registry().values() for src, path in lang.local_sources(data_root)
    }
    missing_from_disk = sorted(p for p in expected if not (data_root / p).is_file())
    assert not missing_from_disk, f"README lists files that are absent: {missing_from_disk}"
    assert local == expected  # the registry finds every README file, and nothing else


def test_german_has_wikiann_train_and_dev(data_root: Path):
    de = get_language("de")
    assert de.find("train", data_root=data_root) == data_root / "wikiann/de/train.tsv.gz"
    assert de.find("dev", data_root=data_root) == data_root / "wikiann/de/dev.tsv.gz"
    assert de.find("test", data_root=data_root) is None
    assert de.labeled_source(data_root) == "wikiann"


def test_bosnian_is_hub_only_for_labels(data_root: Path):
    bs = get_language("bs")
    assert bs.find("train", data_root=data_root) is None
    assert [s.kind for s, _ in bs.local_sources(data_root)] == ["unlabeled"]  # tatoeba only
    assert bs.hub == HubSource("unimelb-nlp/wikiann", "bs")
    for code in HUB_ONLY:
        assert get_language(code).labeled_source(data_root) is None, code


def test_danish_prefers_uner(data_root: Path):
    da = get_language("da")
    assert da.labeled_source(data_root) == "uner"
    assert da.find("train", data_root=data_root) == data_root / "uner/da/train.tsv.gz"
    assert da.find("test", data_root=data_root) == data_root / "uner/da/test.tsv.gz"
    assert get_language("lv").find("train", data_root=data_root) == data_root / "newsner/lv/train.txt.gz"


def test_english_tatoeba_resolves_to_the_deu_eng_file(data_root: Path):
    en = get_language("en")
    path = en.find("unlabeled", kind="unlabeled", data_root=data_root)
    assert path == data_root / "tatoeba/en.from-deu-eng.txt.gz" and path.is_file()


def test_labeled_splits_never_mix_datasets(data_root: Path):
    en = get_language("en")  # wikiann train/dev and uner dev/test are both here
    assert en.labeled_source(data_root) == "wikiann"
    assert en.find("test", data_root=data_root) is None  # not UNER's test behind the user's back
    assert en.find("test", data_root=data_root, source="uner") == data_root / "uner/en/test.tsv.gz"


def test_preference_holds_when_both_datasets_exist(tmp_path: Path):
    for rel in ("wikiann/da/train.tsv.gz", "uner/da/train.tsv.gz", "wikiann/pt/train.tsv.gz",
                "uner/pt/train.tsv.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert get_language("da").find("train", data_root=tmp_path) == tmp_path / "uner/da/train.tsv.gz"
    assert get_language("pt").find("train", data_root=tmp_path) == tmp_path / "wikiann/pt/train.tsv.gz"


def test_no_data_root_means_hub_only():
    de = get_language("de")
    assert de.local_sources(None) == []
    assert de.find("train") is None


def test_find_rejects_bad_split_or_kind():
    with pytest.raises(ValueError, match="split"):
        get_language("de").find("validation")
    with pytest.raises(ValueError, match="kind"):
        get_language("de").find("train", kind="gold")


def test_tag_map_drops_uner_oth():
    hr, de = get_language("hr"), get_language("de")
    assert [hr.map_tag(t) for t in ("B-OTH", "I-OTH", "B-PER", "O")] == ["O", "O", "B-PER", "O"]
    assert de.map_tag("B-OTH") == "B-OTH"  # no override, no change


# --------------------------------------------------------------------------- codes


def test_unknown_but_well_formed_code():
    sw = get_language("sw")
    assert not sw.in_registry
    assert sw.sources == () and sw.local_sources(Path("/")) == []
    assert sw.hub == HubSource("unimelb-nlp/wikiann", "sw")
    assert get_language("pt-BR").code == "pt-BR" and not get_language("pt-BR").in_registry
    assert get_language(" DE ").in_registry  # case and whitespace are forgiven


@pytest.mark.parametrize("bad", ["", "d", "english", "12", "de/../x", "de-", None])
def test_malformed_code_raises(bad):
    with pytest.raises(ValueError, match="xdistil languages"):
        get_language(bad)


# --------------------------------------------------------------------------- output


def test_format_registry_with_local_data(data_root: Path):
    text = format_registry(data_root)
    lines = text.splitlines()
    assert str(data_root) in lines[1]
    rows = {line.split()[0]: line for line in lines if line and line.split()[0] in RAHIMI_41}
    assert sorted(rows) == sorted(RAHIMI_41)
    assert "hub only" in rows["bs"] and "unimelb-nlp/wikiann/bs" in rows["bs"]
    assert "wikiann:train,dev" in rows["de"] and "hub only" not in rows["de"]
    assert "wikiann:unlabeled tatoeba" in rows["af"]
    assert "uner:train,dev,test" in rows["da"]
    assert "prefer uner" in text and "OTH->O" in text
    assert max(len(line) for line in lines) <= 120


def test_format_registry_without_data_root():
    text = format_registry(None, ["de", "sw"])
    assert "none: hub only" in text
    assert "sw" in text and "(not registered)" in text
    assert text.count("hub only") >= 3  # header + both rows


def test_registry_as_dicts_is_json(data_root: Path):
    dicts = registry_as_dicts(data_root)
    json.dumps(dicts)
    by_code = {d["code"]: d for d in dicts}
    assert sorted(by_code) == sorted(RAHIMI_41)
    assert by_code["da"]["labeled_source"] == "uner"
    assert by_code["da"]["overrides"]["tag_map"] == {"OTH": "O"}
    assert by_code["bs"]["labeled_source"] is None
    local = [s["local_path"] for s in by_code["en"]["sources"] if s["local_path"]]
    assert str(data_root / "tatoeba/en.from-deu-eng.txt.gz") in local


# --------------------------------------------------------------------------- validation

GOOD = xl.REGISTRY_PATH.read_text(encoding="utf-8")
DE_TRAIN = 'format = "conll", path = "wikiann/de/train.tsv.gz"'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (DE_TRAIN, DE_TRAIN.replace("conll", "conl"), r"code 'de'.*unknown format 'conl'"),
        ('kind = "labeled", name = "wikiann", split = "train", format = "conll", path = "wikiann/de/',
         'kind = "gold", name = "wikiann", split = "train", format = "conll", path = "wikiann/de/',
         r"code 'de'.*unknown kind 'gold'"),
        ('code = "de"\nname = "German"', 'code = "de"\nname = ""', r"code 'de'.*'name'"),
        ('code = "de"', 'code = "da"', r"code 'da'.*duplicate"),
        ('code = "de"', 'code = "German"', r"code 'German'.*malformed"),
        ('prefer_labeled = "newsner"', 'prefer_labelled = "newsner"', r"code 'lv'.*unknown override"),
        ('prefer_labeled = "uner"\ntag_map = { OTH = "O" }\nnote = "Labeled data: Universal NER v1 (DDT',
         'prefer_labeled = "newsner"\ntag_map = { OTH = "O" }\nnote = "Labeled data: Universal NER v1 (DDT',
         r"code 'da'.*prefer_labeled = 'newsner'"),
        ('path = "tatoeba/de.txt.gz"', 'path = "../de.txt.gz"', r"code 'de'.*relative"),
        ('code = "vi"', 'code = "sw"', r"missing \['vi'\], unexpected \['sw'\]"),
        ('[[language]]\ncode = "de"', '[[language]]\ncode = "de"\ncode = "de"', r"not valid TOML"),
    ],
)
def test_broken_registry_names_the_entry(tmp_path: Path, old: str, new: str, message: str):
    assert old in GOOD, old  # the edit must apply, or the test proves nothing
    broken = tmp_path / "registry.toml"
    broken.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(RegistryError, match=message):
        load_registry(path=broken)


def test_good_copy_loads_and_missing_file_is_clear(tmp_path: Path):
    copy = tmp_path / "registry.toml"
    copy.write_text(GOOD, encoding="utf-8")
    assert load_registry(path=copy) == load_registry()
    with pytest.raises(RegistryError, match="not found"):
        load_registry(path=tmp_path / "nope.toml")
