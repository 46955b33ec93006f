"""lyre installs one import name, ``lyre``: a wheel built from this checkout, installed into a fresh
virtual environment, answers ``lyre --help`` and indexes, searches and evaluates the sample from a folder
holding decoys named like lyre's layer folders (``formats.py``, ``models.py``, ``cli/``), which would
shadow top-level packages of those names.

The fresh environment borrows the test environment's third-party packages through a ``.pth`` line (a
path line only: the editable install of this checkout, which the test environment activates through its
own ``.pth`` files, is not activated there), so nothing is downloaded.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import REPOSITORY, SAMPLE

LAYERS = ("basics", "formats", "models", "indexes", "retrieval", "serve", "cli")
PACKAGE_DATA = ("serve/static/index.html", "serve/static/app.css", "serve/static/app.js")
"""The files besides modules the wheel must hold (the page ``lyre serve`` shows)."""


NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", ".gpu-bundle", "docs")
"""What a wheel is never built from: setuptools builds in ``build/`` beside the sources and would put
modules left there by an earlier build (say, one since renamed) into the wheel."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, folder = tmp_path_factory.mktemp("source") / "lyre", tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPOSITORY, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", folder,
         source],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return next(folder.glob("lychee_retrieval-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_module_under_lyre_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if ".dist-info/" not in name]
    assert {name.split("/")[0] for name in names} == {"lyre"}
    modules = {
        f"lyre/{path.relative_to(REPOSITORY).as_posix()}"
        for layer in LAYERS
        for path in (REPOSITORY / layer).rglob("*.py")
    }
    expected = modules | {"lyre/__init__.py", "lyre/__main__.py"} | {f"lyre/{name}" for name in PACKAGE_DATA}
    assert set(names) == expected  # a subpackage missing from pyproject.toml's list would be left out


@pytest.mark.slow
def test_an_installed_wheel_runs_the_sample_beside_decoy_modules(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    fresh_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    borrowed = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (Path(fresh_site) / "borrowed.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
         wheel],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    work = tmp_path / "notebook"
    (work / "cli").mkdir(parents=True)
    (work / "cli" / "__init__.py").write_text("raise ImportError('the decoy cli package was imported')\n")
    for decoy in ("formats", "models", "retrieval", "indexes", "basics"):
        (work / f"{decoy}.py").write_text(f"raise ImportError('the decoy {decoy}.py was imported')\n")
    lyre = venv / "bin" / "lyre"

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*map(str, args)], cwd=work, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result

    assert "search" in run(lyre, "--help").stdout
    where = run(python, "-c", "import lyre.cli.app, lyre.formats.runs as r; print(r.__file__)").stdout
    assert where.startswith(fresh_site)  # the installed wheel, not this checkout
    run(lyre, "-q", "index", SAMPLE / "corpus.jsonl", "--out", work / "index", "--bm25-only")
    run(
        python, "-m", "lyre", "-q", "search", "--index", work / "index", "--queries", SAMPLE / "queries.tsv",
        "--mode", "bm25", "--rerank-depth", "0", "--out", work / "bm25.run",
    )  # fmt: skip
    table = run(lyre, "eval", SAMPLE / "qrels.tsv", work / "bm25.run").stdout
    assert "nDCG@10" in table and "bm25.run" in table
