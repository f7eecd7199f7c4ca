"""Which packages and files the distribution holds, found from the folders (the rest of the
metadata is in pyproject.toml).

`fib_runtime/` is the package; `adapters/` and `definitions/` install as
`fib_runtime.adapters` and `fib_runtime.definitions`. Every file under these three folders
ships (caches and hidden files aside): each folder holding one is a package (with or without
`__init__.py`) and its other files (definitions' JSON, `py.typed`) are its package data, so
a new module, folder or data file needs no edit here. `scripts/check_wheel.py` checks a built
wheel against the folders.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

ROOTS = {"fib_runtime": "fib_runtime", "fib_runtime.adapters": "adapters",
         "fib_runtime.definitions": "definitions"}


def shipped_files(folder: str) -> list[Path]:
    """The files under `folder` that ship, relative to it."""
    base = Path(folder)
    return sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file()
                  and p.suffix != ".pyc" and not any(part == "__pycache__" or
                                                     part.startswith(".") for part in p.parts))


def layout() -> tuple[list[str], dict[str, list[str]]]:
    """Every package, and the package data (files other than modules) of each."""
    data: dict[str, list[str]] = {}
    for name, folder in ROOTS.items():
        for path in shipped_files(folder):
            package = ".".join((name, *path.parent.parts))
            files = data.setdefault(package, [])
            if path.suffix != ".py":
                files.append(path.name)
    return sorted(data), {package: files for package, files in data.items() if files}


if __name__ == "__main__":
    packages, package_data = layout()
    setup(packages=packages, package_dir=ROOTS, package_data=package_data)
