"""lyre: a retrieval pipeline from a corpus file to an evaluated TREC run.

The one import name lyre installs. Its layers live in the repository's top-level folders and are
mapped under it by ``pyproject.toml`` (``lyre.basics`` -> ``basics/``, ..., ``lyre.cli`` -> ``cli/``),
so a user's ``models.py`` or ``cli/`` beside a notebook cannot shadow them.
"""
