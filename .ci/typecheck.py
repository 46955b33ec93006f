"""Type-check every library package with mypy, under its import name (``lyre.basics``, ``lyre.retrieval``).

The layers live in top-level folders that ``[tool.setuptools.package-dir]`` maps under ``lyre``; the editable
install serves that mapping through an import hook, which mypy cannot follow (``mypy -p lyre`` alone would
check ``lyre/`` and nothing else). So this script lays out what mypy expects, a tree of links
``build/typecheck/lyre/<layer>`` -> ``<folder>`` made from that same table (``[tool.mypy] mypy_path`` points
there), runs mypy with the settings of ``[tool.mypy]``, and names each file in its report by its path in the
repository, so an editor can jump to it. ``make test``, ``make test-fast`` and ``make lint`` run it.

Usage: ``python .ci/typecheck.py [mypy options]``; exits with mypy's status.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

REPOSITORY = Path(__file__).resolve().parent.parent
TREE = REPOSITORY / "build" / "typecheck"


def package_folders() -> dict[str, Path]:
    """``{"lyre.basics": <repository>/basics, ...}``: where setuptools takes each package from."""
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = pyproject["tool"]["setuptools"]["package-dir"]
    return {name: REPOSITORY / folder for name, folder in mapping.items()}


def link_tree(folders: dict[str, Path]) -> dict[Path, Path]:
    """Build ``TREE`` afresh: the root package's files linked one by one (its folder holds the other links),
    every other package's folder linked whole. Returns each link -> the repository folder it stands for."""
    shutil.rmtree(TREE, ignore_errors=True)
    links: dict[Path, Path] = {}
    for name, folder in sorted(folders.items()):
        place = TREE.joinpath(*name.split("."))
        if "." not in name:
            place.mkdir(parents=True)
            for module in sorted(folder.glob("*.py")):
                (place / module.name).symlink_to(module)
        else:
            place.symlink_to(folder, target_is_directory=True)
        links[place] = folder
    return links


def real_paths(report: str, links: dict[Path, Path]) -> str:
    """mypy's report with every linked path written as the repository path it stands for (the deepest
    link first: ``build/typecheck/lyre/basics/`` before ``build/typecheck/lyre/``)."""
    for place, folder in sorted(links.items(), key=lambda item: -len(item[0].parts)):
        for spelling in (str(place), str(place.relative_to(REPOSITORY))):
            report = report.replace(f"{spelling}/", f"{folder.relative_to(REPOSITORY)}/")
    return report


def main(arguments: list[str]) -> int:
    os.chdir(REPOSITORY)  # the cache_dir of [tool.mypy] is relative to where mypy runs
    links = link_tree(package_folders())
    stdout, stderr, status = api.run(["--config-file", str(REPOSITORY / "pyproject.toml"), *arguments])
    sys.stdout.write(real_paths(stdout, links))
    sys.stderr.write(real_paths(stderr, links))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
