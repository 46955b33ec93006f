"""How an artifact was made: command line, library versions, time, input hashes.

Every run file sidecar and every index manifest stage carries one of these records.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

_CORE_LIBRARIES = ("lychee-retrieval", "numpy", "pyarrow")


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of lyre's core libraries plus ``names`` (absent ones are reported as such)."""
    versions = {"python": platform.python_version()}
    for name in (*_CORE_LIBRARIES, *names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def command_line() -> str:
    """The command as the user typed it, with the program shown as ``lyre``."""
    args = list(sys.argv)
    if args:
        args[0] = "lyre" if Path(args[0]).name in {"lyre", "app.py", "__main__.py"} else args[0]
    return shlex.join(args)


def sha256_file(path: str | Path, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def provenance(*libraries: str, **params: Any) -> dict[str, Any]:
    """A record of the current command: what was run, when, with which versions and parameters."""
    return {
        "command": command_line(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(*libraries),
        "params": params,
    }
