"""The student interface and the registry of architectures: one file per student.

A student architecture is one module of this package, named after its ``arch``
(``bilstm.py`` is ``arch: bilstm``), holding its config dataclass and its whole forward
pass, and registering its class with ``@register("<arch>")``. Nothing else names it:
config validation, build / save / load, the CLI choices, the report and the latency
benchmark all go through `names` and `get`. `names` lists the modules without
importing them; `get` imports the one asked for.

Adding a student: write ``xdistil/students/<arch>.py`` with a class that satisfies
`Student` (see ``cnn.py`` for a small one) and decorate it; then ``student.arch: <arch>``
works everywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from xdistil.outputs import TaggerOutput

# Modules of this package that are not architectures.
_NOT_STUDENTS = frozenset({"registry"})


@runtime_checkable
class Student(Protocol):
    """What every student is: an ``nn.Module`` the distiller, evaluation and export use alike."""

    arch: ClassVar[str]
    """Registry name (set by `register`), stored as ``arch`` in the student's meta."""
    config: Any
    """The architecture's own config dataclass instance (saved in the meta as JSON)."""
    labels: tuple[str, ...]
    """Tag of every output row, in order."""

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor
    ) -> TaggerOutput:
        """(B, T) ids, right-padded (B, T) mask, (B, T) first-sub-word mask -> `TaggerOutput`."""
        ...

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of every entry of ``TaggerOutput.hidden_states`` (index 0 = embeddings), known
        without a forward pass, so the hidden loss can size its projections up front."""
        ...

    def hidden_size(self, layer_index: int) -> int:
        """``hidden_sizes[layer_index]`` (negative indices count from the last layer)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Rows of the word-piece embedding table (the reduced vocabulary)."""
        ...

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Named parameter groups top-down (``output``, ``encoder``, ``embeddings``): the order
        in which gradual unfreezing releases them; together they hold every parameter once."""
        ...

    @classmethod
    def config_from(cls, run: Any) -> Any:
        """The architecture's config from the run's `xdistil.config.StudentConfig` (typed Any:
        the config layer sits above the registry, which it reads for the architecture names)."""
        ...

    @classmethod
    def build(cls, teacher_model: nn.Module, tokenizer, kept: Sequence[int], cfg: Any,
              labels: Sequence[str]) -> Student:
        """A fresh student over the reduced ``tokenizer``; ``kept[new_id] = teacher_id`` picks the
        teacher's embedding rows (for initialisation from the teacher)."""
        ...

    def save(self, folder: Path) -> dict:
        """Write the weights (safetensors) and any files of its own into ``folder``; return the
        config as JSON-able data (stored in ``xdistil_student.json``)."""
        ...

    @classmethod
    def load(cls, folder: Path, config: dict, labels: Sequence[str]) -> Student:
        """Rebuild from a folder written by `save` and the config it returned."""
        ...

    @staticmethod
    def describe(run: Mapping) -> str:
        """One line on the shape, from a run's student config as a dict (report tables)."""
        ...


_CLASSES: dict[str, type] = {}
_MEMBERS = ("config_from", "build", "save", "load", "describe", "param_groups", "hidden_sizes", "hidden_size",
            "vocab_size", "forward")


def register(arch: str):
    """Class decorator: ``@register("cnn")`` makes the class the student of ``arch: cnn``."""

    def deco(cls: type) -> type:
        missing = [m for m in _MEMBERS if not hasattr(cls, m)]
        if missing:
            raise TypeError(f"student {cls.__name__} ({arch!r}) lacks {', '.join(missing)} (see registry.Student)")
        if _CLASSES.get(arch, cls) is not cls:
            raise ValueError(f"student arch {arch!r} is registered twice ({_CLASSES[arch].__name__}, {cls.__name__})")
        cls.arch = arch
        _CLASSES[arch] = cls
        return cls

    return deco


def names() -> list[str]:
    """Every architecture, sorted: the student modules of this package (nothing is imported)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name not in _NOT_STUDENTS)


def get(arch: str) -> type:
    """The student class of ``arch`` (imports its module); one-line error for an unknown one."""
    if arch not in _CLASSES:
        if arch not in names():
            raise ValueError(f"unknown student arch {arch!r} (known: {', '.join(names())})")
        importlib.import_module(f"xdistil.students.{arch}")
        if arch not in _CLASSES:
            raise TypeError(f"xdistil/students/{arch}.py registers no student: decorate its class "
                            f"with @register({arch!r})")
    return _CLASSES[arch]


def arch_of(model: object) -> str:
    """The registered arch of a student instance (``TypeError`` for anything else)."""
    arch = getattr(type(model), "arch", None)
    if not isinstance(arch, str) or _CLASSES.get(arch) is not type(model):
        raise TypeError(f"not a registered student: {type(model).__name__}")
    return arch
