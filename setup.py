"""Which packages the `xdistil` distribution ships: found, never listed by hand.

Everything else (metadata, dependencies, commands, package data) is in pyproject.toml. This file
exists because pyproject.toml can either list packages or find them, and finding cannot rename:
`languages/` and `export/` sit at the top of the repository (design card) but install as
`xdistil_languages` and `xdistil_export`. A hand list once missed `xdistil.commands` and
`xdistil.run`, and the wheel broke while the editable install hid it (tests/test_wheel.py now
builds the wheel and checks it carries every tracked module).
"""

from setuptools import find_packages, setup

# installed name -> folder in the repository
RENAMED = {"xdistil_languages": "languages", "xdistil_export": "export"}


def packages() -> list[str]:
    """`xdistil` and every subpackage, then each renamed folder and its subpackages."""
    found = find_packages(include=["xdistil", "xdistil.*"])
    for name, folder in RENAMED.items():
        found += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


setup(packages=packages(), package_dir=RENAMED)
