"""The xdistil language registry: the 41 WikiANN languages of Rahimi et al. (2019).

`registry.toml`, next to this file, lists per language its English name, script,
writing direction, the data files that *may* exist under a data root (paths
relative to it), the Hugging Face hub fallback and a few explained overrides.
Whether a file exists is decided at run time against the data root the caller
passes, so one registry serves every machine.

    >>> lang = get_language("da")
    >>> lang.find("train", data_root=Path("/work/shared/data"))   # doctest: +SKIP
    PosixPath('/work/shared/data/uner/da/train.tsv.gz')

Pure Python on purpose (tomllib, dataclasses, pathlib): the registry sits at the
ground of the import graph, and `xdistil languages` must answer without torch.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "HUB_DATASET",
    "RAHIMI_41",
    "REGISTRY_PATH",
    "HubSource",
    "Language",
    "RegistryError",
    "Source",
    "format_registry",
    "get_language",
    "load_registry",
    "registry_as_dicts",
]

REGISTRY_PATH = Path(__file__).with_name("registry.toml")
HUB_DATASET = "unimelb-nlp/wikiann"

# The language set of XtremeDistil Table 5 / MT-BERT; the registry must hold exactly these.
RAHIMI_41: tuple[str, ...] = tuple(
    "af ar bg bn bs ca cs da de el en es et fa fi fr he hi hr hu id it lt lv mk ms nl no "
    "pl pt ro ru sk sl sq sv ta tl tr uk vi".split()
)

# What each kind of source may hold; checked on load so a typo fails loudly, not at training time.
SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"labeled": ("train", "dev", "test"), "unlabeled": ("unlabeled",)}
)
FORMATS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"labeled": ("conll",), "unlabeled": ("tokens", "raw")}
)
DIRECTIONS = ("ltr", "rtl")
OVERRIDE_KEYS = ("prefer_labeled", "tag_map", "note")

# ISO 639 code (2-3 lowercase letters), optionally with script/region subtags: sw, pt-BR, sr_Latn.
_CODE_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,2}$")
_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
LIST_HINT = "run `xdistil languages` to list the registered languages"


class RegistryError(ValueError):
    """registry.toml is missing, unparsable or has an invalid entry (the message names it)."""


@dataclass(frozen=True)
class Source:
    """One file that may exist under a data root."""

    kind: str  # "labeled" | "unlabeled"
    name: str  # dataset: wikiann, uner, newsner, tatoeba
    split: str  # train | dev | test (labeled), unlabeled (unlabeled)
    path: str  # POSIX path relative to the data root
    format: str  # conll | tokens | raw

    def resolve(self, data_root: str | Path) -> Path:
        return Path(data_root) / self.path


@dataclass(frozen=True)
class HubSource:
    """Hugging Face dataset fallback: `datasets.load_dataset(dataset, config)`."""

    dataset: str
    config: str


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str
    direction: str  # "ltr" | "rtl" ("unknown" for codes outside the registry)
    sources: tuple[Source, ...]
    hub: HubSource
    # Read-only (the registry is cached and shared); hash=False since mappings are unhashable.
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    in_registry: bool = True

    @property
    def prefer_labeled(self) -> str | None:
        return self.overrides.get("prefer_labeled")

    @property
    def tag_map(self) -> Mapping[str, str]:
        return self.overrides.get("tag_map", MappingProxyType({}))

    def map_tag(self, tag: str) -> str:
        """Apply the tag_map override to one IOB2 tag ("B-OTH" -> "O" when OTH maps to "O")."""
        prefix, sep, etype = tag.partition("-")
        if not sep or etype not in self.tag_map:
            return tag
        new = self.tag_map[etype]
        return "O" if new == "O" else f"{prefix}-{new}"

    def local_sources(self, data_root: str | Path | None) -> list[tuple[Source, Path]]:
        """Sources whose file exists under data_root, in registry order (none when data_root is None)."""
        if data_root is None:
            return []
        return [(s, s.resolve(data_root)) for s in self.sources if s.resolve(data_root).is_file()]

    def labeled_source(self, data_root: str | Path | None) -> str | None:
        """Name of the labeled dataset used by default under data_root, None when hub only.

        The `prefer_labeled` override wins when any of its files is here; otherwise the
        first dataset (registry order) with a local train file, else with any labeled file.
        """
        local = [s for s, _ in self.local_sources(data_root) if s.kind == "labeled"]
        names = [s.name for s in local]
        if self.prefer_labeled in names:
            return self.prefer_labeled
        with_train = [s.name for s in local if s.split == "train"]
        return (with_train or names or [None])[0]

    def find(
        self,
        split: str,
        kind: str = "labeled",
        data_root: str | Path | None = None,
        *,
        source: str | None = None,
    ) -> Path | None:
        """Local file for (kind, split), or None (then use the hub fallback or user files).

        Labeled splits all come from one dataset (`source`, else `labeled_source`): training
        on WikiANN and scoring on UNER would give a meaningless F1, so a split the chosen
        dataset lacks is None rather than borrowed from another dataset.
        """
        if kind not in SPLITS:
            raise ValueError(f"kind must be one of {', '.join(SPLITS)}, not {kind!r}")
        if split not in SPLITS[kind]:
            raise ValueError(f"{kind} split must be one of {', '.join(SPLITS[kind])}, not {split!r}")
        if kind == "labeled" and source is None:
            source = self.labeled_source(data_root)
            if source is None:
                return None
        for src, path in self.local_sources(data_root):
            if src.kind == kind and src.split == split and source in (None, src.name):
                return path
        return None


# --------------------------------------------------------------------------- loading


def load_registry(path: str | Path | None = None) -> dict[str, Language]:
    """code -> Language, in registry order; validated, cached per file (a fresh dict each call)."""
    return dict(_load(Path(path).resolve() if path is not None else REGISTRY_PATH))


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> dict[str, Language]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise RegistryError(f"language registry not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML: {exc}") from exc

    extra = set(data) - {"language"}
    if extra:
        raise RegistryError(f"{path}: unknown top-level key(s) {sorted(extra)}; expected [[language]] tables")
    entries = data.get("language")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"{path}: no [[language]] tables")

    languages: dict[str, Language] = {}
    for i, raw in enumerate(entries, start=1):
        code = raw.get("code") if isinstance(raw, dict) else None
        where = f"{path.name}: [[language]] #{i} (code {code!r})"
        lang = _parse_language(raw, where)
        if lang.code in languages:
            raise RegistryError(f"{where}: duplicate code {lang.code!r}")
        languages[lang.code] = lang

    missing = [c for c in RAHIMI_41 if c not in languages]
    unexpected = [c for c in languages if c not in RAHIMI_41]
    if missing or unexpected:
        raise RegistryError(
            f"{path.name}: the registry must list exactly the 41 WikiANN languages of Rahimi et al.; "
            f"missing {missing}, unexpected {unexpected} (other codes need no entry: get_language "
            "accepts any well-formed code)"
        )
    return languages


def _parse_language(raw: Any, where: str) -> Language:
    def fail(msg: str) -> RegistryError:
        return RegistryError(f"{where}: {msg}")

    if not isinstance(raw, dict):
        raise fail("not a table")
    allowed = {"code", "name", "script", "direction", "hub", "sources", "overrides"}
    if set(raw) - allowed:
        raise fail(f"unknown key(s) {sorted(set(raw) - allowed)}; allowed: {sorted(allowed)}")
    for key in ("code", "name", "script", "direction"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise fail(f"{key!r} must be a non-empty string")
    code = raw["code"]
    if not _CODE_RE.match(code):
        raise fail(f"malformed code {code!r}")
    if raw["direction"] not in DIRECTIONS:
        raise fail(f"direction must be one of {DIRECTIONS}, not {raw['direction']!r}")

    hub = raw.get("hub")
    if not (isinstance(hub, dict) and set(hub) == {"dataset", "config"}
            and all(isinstance(v, str) and v for v in hub.values())):
        raise fail('hub must be { dataset = "...", config = "..." }')

    sources = tuple(_parse_source(s, f"{where}: sources[{j}]") for j, s in enumerate(raw.get("sources", [])))
    seen: set[tuple[str, str, str]] = set()
    for src in sources:
        # (name, split) picks one labeled file; two would make find() ambiguous.
        key = (src.kind, src.name, src.split) if src.kind == "labeled" else (src.kind, src.path, "")
        if key in seen:
            raise fail(f"duplicate source {src.name}/{src.split} ({src.path})")
        seen.add(key)

    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict):
        raise fail("overrides must be a table")
    if set(overrides) - set(OVERRIDE_KEYS):
        raise fail(f"unknown override(s) {sorted(set(overrides) - set(OVERRIDE_KEYS))}; known: {OVERRIDE_KEYS}")
    prefer = overrides.get("prefer_labeled")
    if prefer is not None and prefer not in {s.name for s in sources if s.kind == "labeled"}:
        raise fail(f"prefer_labeled = {prefer!r} names no labeled source of this language")
    tag_map = overrides.get("tag_map", {})
    if not isinstance(tag_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _TYPE_RE.match(k) and (v == "O" or _TYPE_RE.match(v))
        for k, v in tag_map.items()
    ):
        raise fail('tag_map must map entity types to entity types or "O", e.g. { OTH = "O" }')
    if not isinstance(overrides.get("note", ""), str):
        raise fail("note must be a string")

    frozen = {k: MappingProxyType(dict(v)) if isinstance(v, dict) else v for k, v in overrides.items()}
    return Language(
        code=code,
        name=raw["name"],
        script=raw["script"],
        direction=raw["direction"],
        sources=sources,
        hub=HubSource(hub["dataset"], hub["config"]),
        overrides=MappingProxyType(frozen),
        in_registry=True,
    )


def _parse_source(raw: Any, where: str) -> Source:
    fields = ("kind", "name", "split", "path", "format")
    if not isinstance(raw, dict) or set(raw) != set(fields):
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise RegistryError(f"{where}: a source needs exactly the keys {fields}, got {got}")
    if not all(isinstance(raw[k], str) and raw[k] for k in fields):
        raise RegistryError(f"{where}: every source field must be a non-empty string")
    kind, split, fmt, path = raw["kind"], raw["split"], raw["format"], raw["path"]
    if kind not in SPLITS:
        raise RegistryError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(SPLITS)})")
    if split not in SPLITS[kind]:
        raise RegistryError(f"{where}: {kind} split must be one of {SPLITS[kind]}, not {split!r}")
    if fmt not in FORMATS[kind]:
        raise RegistryError(f"{where}: unknown format {fmt!r} for {kind} data (expected one of {FORMATS[kind]})")
    # Paths stay inside the data root, so a registry can never point at arbitrary files.
    if path.startswith("/") or "\\" in path or ".." in Path(path).parts:
        raise RegistryError(f"{where}: path {path!r} must be relative to the data root, without '..'")
    return Source(kind=kind, name=raw["name"], split=split, path=path, format=fmt)


def get_language(code: str) -> Language:
    """Registry entry for code, or a hub-only stand-in for a well-formed code outside the 41.

    An unregistered language has no registered sources; it still runs on files the user
    names explicitly, or on the WikiANN hub config of the same name (176 languages there).
    """
    if not isinstance(code, str):
        raise ValueError(f"language code must be a string, not {type(code).__name__}; {LIST_HINT}")
    stripped = code.strip()
    cut = len(re.match(r"[A-Za-z]*", stripped).group())
    norm = stripped[:cut].lower() + stripped[cut:]  # "DE" -> "de"; subtags keep their case (pt-BR)
    registry = _load(REGISTRY_PATH)
    if norm in registry:
        return registry[norm]
    if not _CODE_RE.match(norm):
        raise ValueError(
            f"malformed language code {code!r}: expected an ISO 639 code of 2-3 lowercase letters, "
            f"optionally with a subtag (e.g. 'sw', 'pt-BR'); {LIST_HINT}"
        )
    return Language(
        code=norm,
        name=norm,
        script="unknown",
        direction="unknown",
        sources=(),
        hub=HubSource(HUB_DATASET, norm),
        in_registry=False,
    )


# --------------------------------------------------------------------------- reporting


def _languages(codes: Iterable[str] | None) -> list[Language]:
    return list(_load(REGISTRY_PATH).values()) if codes is None else [get_language(c) for c in codes]


def _labeled_cell(lang: Language, data_root: Path | None) -> str:
    splits: dict[str, list[str]] = {}  # dataset -> local splits, registry order
    for src, _ in lang.local_sources(data_root):
        if src.kind == "labeled":
            splits.setdefault(src.name, []).append(src.split)
    if not splits:
        return "hub only"
    chosen = lang.labeled_source(data_root)
    star = (lambda n: n + "*" if n == chosen else n) if len(splits) > 1 else (lambda n: n)
    return " ".join(f"{star(n)}:{','.join(s)}" for n, s in splits.items())


def _unlabeled_cell(lang: Language, data_root: Path | None) -> str:
    labeled_names = {s.name for s in lang.sources if s.kind == "labeled"}
    # "wikiann:unlabeled" tells the test-token file apart from WikiANN's labeled splits;
    # a corpus that is only ever unlabeled (tatoeba) needs no suffix.
    cells = [
        f"{s.name}:{s.split}" if s.name in labeled_names else s.name
        for s, _ in lang.local_sources(data_root)
        if s.kind == "unlabeled"
    ]
    return " ".join(cells) or "-"


def _overrides_cell(lang: Language) -> str:
    parts = []
    if lang.prefer_labeled:
        parts.append(f"prefer {lang.prefer_labeled}")
    if lang.tag_map:
        parts.append("tags " + ",".join(f"{k}->{v}" for k, v in lang.tag_map.items()))
    return "; ".join(parts)


def format_registry(data_root: str | Path | None, codes: list[str] | None = None) -> str:
    """Plain-text table for `xdistil languages` (fits 120 columns for the 41 languages)."""
    root = Path(data_root) if data_root is not None else None
    if root is None:
        root_line = "data root: none: hub only"
    elif not root.is_dir():
        root_line = f"data root: {root} (missing: hub only)"
    else:
        root_line = f"data root: {root}"
    langs = _languages(codes)

    header = ("code", "name", "script", "labeled here", "unlabeled here", "hub fallback")
    rows: list[tuple[tuple[str, ...], str]] = []
    for lang in langs:
        name = lang.name if lang.in_registry else "(not registered)"
        cells = (
            lang.code,
            name,
            lang.script,
            _labeled_cell(lang, root),
            _unlabeled_cell(lang, root),
            f"{lang.hub.dataset}/{lang.hub.config}",  # no "hub:" prefix: the header says it, 120 cols
        )
        rows.append((cells, _overrides_cell(lang)))
    widths = [max(len(r[i]) for r in [header, *(c for c, _ in rows)]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    n_local = sum(1 for cells, _ in rows if cells[3] != "hub only")
    out = [
        f"xdistil languages: {len(langs)} shown (the registry holds the 41 WikiANN languages of Rahimi et al. 2019)",
        root_line,
        "",
        line(header),
        line(tuple("-" * w for w in widths)),
    ]
    for cells, overrides in rows:
        out.append(line(cells))
        if overrides:  # on its own line: a seventh column would not fit 120 columns
            out.append(" " * (widths[0] + 2) + f"overrides: {overrides}")
    out += [
        "",
        f"{n_local} with labeled data under the data root, {len(rows) - n_local} hub only.",
        "'*' = labeled dataset used by default when several are here; '-' = no unlabeled file here.",
    ]
    return "\n".join(out)


def registry_as_dicts(data_root: str | Path | None, codes: list[str] | None = None) -> list[dict[str, Any]]:
    """JSON-serialisable view of the registry (for `xdistil languages --json`), with local availability."""
    root = Path(data_root) if data_root is not None else None
    result = []
    for lang in _languages(codes):
        local = {src: path for src, path in lang.local_sources(root)}
        result.append(
            {
                "code": lang.code,
                "name": lang.name,
                "script": lang.script,
                "direction": lang.direction,
                "in_registry": lang.in_registry,
                "hub": {"dataset": lang.hub.dataset, "config": lang.hub.config},
                "overrides": {k: dict(v) if isinstance(v, Mapping) else v for k, v in lang.overrides.items()},
                "data_root": str(root) if root is not None else None,
                "labeled_source": lang.labeled_source(root),
                "sources": [
                    {
                        "kind": s.kind,
                        "name": s.name,
                        "split": s.split,
                        "format": s.format,
                        "path": s.path,
                        "local_path": str(local[s]) if s in local else None,
                    }
                    for s in lang.sources
                ],
            }
        )
    return result
