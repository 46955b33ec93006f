"""`lyre index`: run the index stages in order, each skipped when the manifest says it is complete.

Stages: ingest -> BM25 -> encode -> dense. Each stage clears its manifest record before it starts and
records itself when done, so rerunning the same command after an interruption redoes only what is
missing, and search never accepts a half-built stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basics.errors import LyreError
from indexes.manifest import stage_record


@dataclass(frozen=True)
class IndexPlan:
    """The options of ``lyre index``; what each stage needs of them is passed on explicitly."""

    bm25_only: bool = False
    embed_model: str = "vec-ai/lychee-embed"
    index_type: str = "auto"
    id_field: str | None = None
    title_field: str | None = None
    text_field: str | None = None
    on_error: str = "fail"
    analyzer: str = "english"
    stemmer: str | None = None
    stopwords: str | None = None
    bm25_method: str = "lucene"
    k1: float = 0.9
    b: float = 0.4
    max_length: int | None = None
    dim: int | None = None
    shard_id: int | None = None
    num_shards: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    ray_cpu_actors: int | None = None
    pooling: str | None = None
    query_template: str | None = None
    query_instruction: str | None = None
    dtype: str | None = None
    shard_rows: int | None = None
    nlist: int | None = None
    pq_m: int | None = None
    recall_target: float = 0.95
    nprobe: int | None = None
    refine: int | None = None
    overwrite: bool = False


def _same_corpus(record: dict[str, Any], path: Path) -> bool:
    """Whether the docstore was built from this file. Same path, size and mtime count as the same file (as
    for make and rsync), so a rerun of a 50 GB corpus, or each task of a job array, does not hash it again;
    anything else is decided by the sha256."""
    from basics.provenance import sha256_file

    stat = path.stat()
    unchanged = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) == (
        record.get("corpus_file"),
        record.get("corpus_size"),
        record.get("corpus_mtime_ns"),
    )
    return unchanged or record.get("corpus_sha256") == sha256_file(path)


def _ingest_stage(corpus: Path, out: Path, plan: IndexPlan) -> str:
    from formats.corpus import corpus_file
    from indexes.ingest import ingest

    record = stage_record(out, "docstore")
    if record and not plan.overwrite:
        if not _same_corpus(record, corpus_file(corpus)):
            raise LyreError(
                f"{out}: was built from another corpus (or the corpus changed); "
                "pass --overwrite to rebuild it, or choose another --out"
            )
        return f"docstore: up to date ({record['documents']} documents)"
    report = ingest(
        corpus,
        out,
        id_field=plan.id_field,
        title_field=plan.title_field,
        text_field=plan.text_field,
        on_error=plan.on_error,
        overwrite=True,
    )
    return report.summary()


def _bm25_stage(out: Path, plan: IndexPlan) -> str:
    from indexes.analyzer import Analyzer
    from indexes.bm25 import bm25_stage

    overrides: dict[str, object] = {}
    if plan.stemmer is not None:
        overrides["stemmer"] = plan.stemmer
    if plan.stopwords is not None:
        words = tuple(word.strip() for word in plan.stopwords.split(",") if word.strip())
        overrides["stopwords"] = words if "," in plan.stopwords else plan.stopwords
    analyzer = Analyzer.preset(plan.analyzer, **overrides)
    wanted = {"k1": plan.k1, "b": plan.b, "method": plan.bm25_method}
    record = stage_record(out, "bm25")
    up_to_date = record is not None and all(record.get(key) == value for key, value in wanted.items())
    if up_to_date and Analyzer.from_dict(record["analyzer"]) == analyzer and not plan.overwrite:
        return "bm25: up to date"
    record = bm25_stage(out, analyzer=analyzer, k1=plan.k1, b=plan.b, method=plan.bm25_method)
    return f"bm25: {record['documents']:,} documents, {record['vocabulary']:,} terms"


def _encode_stage(out: Path, plan: IndexPlan) -> dict[str, Any]:
    if plan.engine not in ("local", "ray"):
        raise LyreError(f"--engine {plan.engine!r} is not known; use local or ray")
    options: dict[str, Any] = {
        "model": plan.embed_model,
        "max_length": plan.max_length,
        "dim": plan.dim,
        "shard_id": plan.shard_id,
        "num_shards": plan.num_shards,
        "overwrite": plan.overwrite,
    }
    recipe_overrides = {
        "pooling": plan.pooling,
        "query_template": plan.query_template,
        "query_instruction": plan.query_instruction,
        "dtype": plan.dtype,
    }
    if plan.engine == "ray":
        from indexes.ray_engine import encode_stage_on_ray

        if any(value is not None for value in recipe_overrides.values()):
            raise LyreError("--engine ray takes the recipe from the model folder; drop the recipe overrides")
        return encode_stage_on_ray(
            out, ray_address=plan.ray_address, cpu_actors=plan.ray_cpu_actors, **options
        )
    from indexes.encode import encode_stage

    return encode_stage(out, **options, **recipe_overrides)


def _dense_stage(out: Path, plan: IndexPlan) -> str:
    from indexes.dense import build_dense

    record = stage_record(out, "dense")
    chosen = {"shard_rows": plan.shard_rows, "nlist": plan.nlist, "m": plan.pq_m, "nprobe": plan.nprobe}
    asked = any(value is not None for value in chosen.values()) or plan.refine is not None
    asked = asked or plan.recall_target != IndexPlan.recall_target
    same_type = record is not None and plan.index_type in ("auto", record["index_type"])
    if same_type and not asked and not plan.overwrite:
        return f"dense: up to date ({record['factory']}, {record['num_shards']} shards)"
    # Dense options given explicitly, or another index type, rebuild the dense stage alone (the
    # embeddings stay), which is what a user comparing flat and IVF-PQ settings wants.
    record = build_dense(
        out,
        index_type=plan.index_type,
        recall_target=plan.recall_target,
        refine=plan.refine,
        overwrite=plan.overwrite or record is not None,
        **{name: value for name, value in chosen.items() if value is not None},
    )
    return str(record["summary"])


def build_index(corpus: Path, out: Path, plan: IndexPlan) -> str:
    """Build or complete the index at ``out``; return one summary line per stage."""
    lines = [_ingest_stage(corpus, out, plan), _bm25_stage(out, plan)]
    if not plan.bm25_only:
        encoded = _encode_stage(out, plan)
        lines.append(str(encoded["summary"]))
        if list(encoded.get("slice", [0, 1]))[1] != 1:
            # Array tasks finish at different times; only the finalize run (no slice) may train IVF-PQ,
            # otherwise two tasks could write the same dense folder at once.
            lines.append("dense: left to the finalize step: rerun `lyre index` without slice options")
        elif stage_record(out, "embeddings") is None:
            lines.append("dense: waiting for missing embedding chunks; rerun `lyre index` to finish them")
        else:
            lines.append(_dense_stage(out, plan))
    return "\n".join(lines)
