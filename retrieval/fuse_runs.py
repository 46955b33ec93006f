"""``lyre fuse``: existing run files fused into one with the fusion registry the search plan uses."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lyre.basics.errors import LyreError, OptionError
from lyre.basics.numbers import count
from lyre.basics.outputs import Output, Source
from lyre.basics.provenance import sha256_file
from lyre.formats.runs import read_run
from lyre.retrieval import fusion
from lyre.retrieval.fusion.linear import parse_weights  # where the weights are checked
from lyre.retrieval.options import FuseOptions, check_run_options
from lyre.retrieval.plan import top_k
from lyre.retrieval.run_output import run_output, write_run_file


def fuse_run_files(run_paths: Sequence[Path], out: Path | Output, options: FuseOptions) -> str:
    """``lyre fuse``: fuse existing runs with the same registry the search plan uses."""
    started = time.perf_counter()
    check_run_options(options)
    if len(run_paths) < 2:
        raise LyreError(f"fusion needs at least two run files (got {count(len(run_paths))})")
    method = fusion.method(options.fusion)
    weights = parse_weights(options.weights, len(run_paths))
    if weights is not None and "weights" not in {param.name for param in method.params}:
        raise OptionError("weights", options.weights, f"apply to linear fusion only (not {method.name})")
    arguments = method.arguments(options, **({"weights": weights} if weights is not None else {}))
    method.check(arguments)
    target = run_output(out, [Source("input run", path) for path in run_paths], reranking=False)
    with target.claimed():
        fused = top_k(method.fuse([read_run(path) for path in run_paths], arguments), options.k)
        tag = options.tag or f"lyre.fuse-{method.label(arguments)}"
        meta = {
            "inputs": [{"path": str(path), "sha256": sha256_file(path)} for path in run_paths],
            "settings": {**asdict(options), "parsed_weights": weights},
        }
        return write_run_file(target, fused, tag, meta, started)
