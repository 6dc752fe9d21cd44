"""The run's home: where its files are (`RunDir`), what each step was built from
(`xdistil.run.fingerprints`) and what ``metrics.json`` holds (`RunRecord`).

Everything that names a path of a run folder goes through `RunDir`; everything that
composes a step's fingerprint goes through `xdistil.run.fingerprints`. This package sits
low in the layers (above the config and the data, below every step), so that the steps
themselves, the pipeline, the CLI, bench and the benchmarks can all use it.
"""

from xdistil.run.layout import RunDir
from xdistil.run.record import RunRecord

__all__ = ["RunDir", "RunRecord"]
