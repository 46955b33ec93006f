"""``lyre tune``: search settings chosen on dev queries, with cross-validation so no query is scored with
settings tuned on it.

A grid (``--grid fusion=rrf,linear --grid rrf-k=10,30,60 --grid weight=0:1:0.1``) names tunable search
settings (:func:`retrieval.settings_file.tunable_types`); every value is parsed as its option's type and
every combination checked with the same declarations as the flags before anything is opened.
Combinations that differ only in settings their fusion or feedback ignores (``weight`` under RRF, ``rrf_k``
under linear fusion, ``prf_docs`` without ``prf``, ``rocchio_beta`` under RM3) are one setting.

The plan is opened once. Each distinct first stage (depth, nprobe, refine and the feedback settings:
pseudo-relevance feedback makes each side's list, :mod:`retrieval.feedback`) is computed once, through the
index's cache, so a second tune reads it; then each setting only fuses (and, with reranking, reranks
through the pair cache) and is scored per query. Each query's value depends only on its own ranking, so
per-query values computed once serve every fold: for fold ``f`` the setting with the best mean on the
other folds is chosen and fold ``f`` is scored with it. The cross-validated mean is the mean over all
queries of these held-out values. The settings written to ``--out`` are the best on all dev queries.

The dev queries are the queries of the queries file that the qrels judge. A judged query the file does not
hold is never searched, so it is left out of every mean and every fold (one warning says how many),
never scored as 0; a queries file with no judged query is an error. Grid values of depth, k, refine and
nprobe beyond what the index holds are capped to it (:mod:`retrieval.sizes`), and a grid whose lists and
values would not fit in memory is refused before any search.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lyre.basics import numbers, progress
from lyre.basics.declared import check_options, option
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.provenance import provenance, sha256_file
from lyre.formats.qrels import qrels_dict, read_qrels
from lyre.formats.queries import read_queries
from lyre.formats.records import Query, Run
from lyre.indexes.manifest import PASSAGES
from lyre.indexes.open_index import open_for_search
from lyre.retrieval import feedback, fusion
from lyre.retrieval.cache import CacheOptions, reuse_line
from lyre.retrieval.evaluation import evaluate_run
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan, check_plan_options, needed_stages, top_k
from lyre.retrieval.query_checks import warn_unknown_terms
from lyre.retrieval.settings_file import apply, check_value_type, nullable, tunable_types, write_settings
from lyre.retrieval.sizes import IndexSize, check_memory, list_bytes

MAX_GRID_VALUES = 10_000
"""More values than anyone means to search: almost always a step typed wrong."""
MAX_SETTINGS = 100_000
"""Combinations of a grid: each one fuses and scores every dev query, and keeps a value per query."""
VALUE_BYTES = 120
"""Memory of one setting's value of one query (a ``{qid: value}`` entry)."""
SIDE_SETTINGS = ("depth", "nprobe", "refine", *feedback.SETTINGS)
"""The settings that change a first stage (the rest only fuse, cut or rerank its lists)."""


@dataclass(frozen=True)
class TuneOptions:
    """What ``lyre tune`` maximises and how it splits the dev queries."""

    measure: str = option("nDCG@10", "Measure to maximise (an ir-measures name, e.g. nDCG@10, RR@10, AP).")
    folds: int = option(5, "Cross-validation folds of the dev queries.", minimum=2)
    seed: int = option(0, "Seed of the shuffle that splits the dev queries into folds.", minimum=0)


Setting = dict[str, Any]


def setting_label(setting: Setting) -> str:
    """``fusion=linear weight=0.3`` (the grid's order), or ``(defaults)`` for an empty setting."""
    return " ".join(f"{name}={_show(value)}" for name, value in setting.items()) or "(defaults)"


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _canonical_name(name: str) -> str:
    return name.strip().replace("-", "_")


def _parse_one(name: str, text: str, entry: str) -> Any:
    _, kind = tunable_types()[name]
    text = text.strip()
    try:
        if text.lower() == "none" and nullable(name):
            return None
        if kind is bool:
            known = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
            return known[text.lower()]
        return check_value_type(name, kind(text))
    except (KeyError, ValueError):
        raise OptionError("grid", entry, f"{text!r} is not a {kind.__name__} value of {name}") from None


def _parse_range(name: str, text: str, entry: str) -> list[Any]:
    """``start:stop:step``, stop included when the steps reach it (0:1:0.25 is 0, 0.25, 0.5, 0.75, 1)."""
    _, kind = tunable_types()[name]
    if kind not in (int, float):
        raise OptionError("grid", entry, f"{name} is not numeric; list its values (a,b,c)")
    try:
        start, stop, step = (kind(part) for part in text.split(":"))
    except ValueError:
        raise OptionError("grid", entry, f"write a range as start:stop:step of {kind.__name__}s") from None
    if not step > 0 or stop < start:
        raise OptionError("grid", entry, "a range needs step > 0 and stop >= start")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_GRID_VALUES:
        limit = numbers.count(MAX_GRID_VALUES)
        raise OptionError(
            "grid", entry, f"gives {numbers.count(count)} values (at most {limit}); check the step"
        )
    if kind is int:
        return [start + i * step for i in range(count)]
    return [round(start + i * step, 12) for i in range(count)]


def parse_grid(entries: Sequence[str]) -> dict[str, list[Any]]:
    """``["rrf-k=10,30", "weight=0:1:0.5"]`` -> ``{"rrf_k": [10, 30], "weight": [0.0, 0.5, 1.0]}``."""
    if not entries:
        raise OptionError("grid", "(none)", "give at least one NAME=v1,v2 or NAME=start:stop:step")
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        name, equals, values = entry.partition("=")
        name = _canonical_name(name)
        if not equals or not values.strip():
            raise OptionError("grid", entry, "write NAME=v1,v2,... or NAME=start:stop:step")
        if name not in tunable_types():
            known = ", ".join(key.replace("_", "-") for key in tunable_types())
            raise OptionError("grid", entry, f"{name!r} is not a tunable setting; use one of {known}")
        if name in grid:
            raise OptionError("grid", entry, f"{name} repeated; give all its values in one {opt('grid')}")
        if values.count(":") == 2 and "," not in values:
            parsed = _parse_range(name, values, entry)
        else:
            parsed = [_parse_one(name, text, entry) for text in values.split(",")]
        grid[name] = list(dict.fromkeys(parsed))
    return grid


def ignored_by_fusion(options: SearchOptions) -> set[str]:
    """The fusion settings this search does not read: all of them outside hybrid mode, and the other
    methods' parameters (``weight`` feeds linear fusion's weights)."""
    fusion_settings = {"fusion", "rrf_k", "weight", "normalization"}
    if options.mode != "hybrid":
        return fusion_settings
    method = fusion.method(options.fusion)
    used = {param.option for param in method.params if param.option is not None} | {"fusion"}
    if any(param.name == "weights" for param in method.params):
        used.add("weight")
    return fusion_settings - used


def grid_settings(grid: dict[str, list[Any]], options: SearchOptions, rerank: RerankOptions) -> list[Setting]:
    """Every combination, checked like the flags, without settings its fusion ignores, each once."""
    combinations = math.prod(len(values) for values in grid.values())
    if combinations > MAX_SETTINGS:
        counts = " x ".join(f"{numbers.count(len(values))} {name}" for name, values in grid.items())
        most = numbers.count(MAX_SETTINGS)
        problem = f"gives {numbers.count(combinations, 'combinations')} (at most {most}); give fewer values"
        raise OptionError("grid", f"({counts})", problem)
    settings: list[Setting] = []
    seen: set[str] = set()
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        applied, applied_rerank = apply(setting, options, rerank)
        try:
            check_plan_options(applied, applied_rerank)
        except OptionError as error:
            raise OptionError("grid", setting_label(setting), f"gives {error}") from None
        ignored = ignored_by_fusion(applied) | feedback.ignored_settings(applied)
        kept = {name: value for name, value in setting.items() if name not in ignored}
        label = setting_label(kept)
        if label not in seen:
            seen.add(label)
            settings.append(kept)
    return settings


def parse_measure(text: str) -> tuple[Any, int | None]:
    """The ir-measures measure and its rank cutoff (None: it reads the whole list)."""
    import ir_measures

    try:
        measure = ir_measures.parse_measure(text)
    except (ValueError, NameError, SyntaxError, TypeError):
        raise OptionError(
            "measure", text, "is not an ir-measures name; use e.g. nDCG@10, RR@10, R@100, AP"
        ) from None
    cutoff = measure.params.get("cutoff") if hasattr(measure, "params") else None
    return measure, cutoff


def fold_ids(qids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """The query ids split into ``folds`` groups of near-equal size by a seeded shuffle."""
    if folds > len(qids):
        raise OptionError("folds", folds, f"is more than the {numbers.count(len(qids), 'dev queries')}")
    shuffled = sorted(qids)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[fold::folds] for fold in range(folds)]


@dataclass(frozen=True)
class FoldResult:
    number: int
    queries: int
    chosen: Setting
    train_mean: float
    fold_mean: float


@dataclass(frozen=True)
class TuneReport:
    """Every setting's mean on all dev queries, the cross-validation, and the setting chosen on all."""

    measure: str
    queries: int
    table: list[tuple[Setting, float]]
    """(setting, mean) best first; ties keep the grid's order."""
    folds: list[FoldResult]
    cross_validated: float
    first_stage_seconds: float
    settings_seconds: float
    judged: int
    """Queries judged in the qrels; those beyond ``queries`` were not in the queries file (left out)."""

    @property
    def chosen(self) -> Setting:
        return self.table[0][0]


def _mean(values: dict[str, float], qids: Sequence[str]) -> float:
    return sum(values[qid] for qid in qids) / len(qids)


def cross_validate(
    settings: list[Setting], values: list[dict[str, float]], folds: list[list[str]]
) -> tuple[list[FoldResult], float]:
    """Per fold: the best setting on the other folds (first in grid order on ties), scored on the fold;
    and the mean over all queries of those held-out values."""
    held_out: dict[str, float] = {}
    results = []
    for number, fold in enumerate(folds, start=1):
        inside = set(fold)
        train = [qid for other in folds for qid in other if qid not in inside]
        means = [_mean(per_query, train) for per_query in values]
        best = max(range(len(settings)), key=lambda i: (means[i], -i))
        held_out.update({qid: values[best][qid] for qid in fold})
        results.append(FoldResult(number, len(fold), settings[best], means[best], _mean(values[best], fold)))
    return results, sum(held_out.values()) / len(held_out)


def check_tune(
    grid_entries: Sequence[str],
    options: SearchOptions,
    rerank: RerankOptions,
    tune_options: TuneOptions,
    cache: CacheOptions | None,
) -> list[Setting]:
    """Every option and every grid combination checked (nothing read): the settings to evaluate."""
    check_options(tune_options)
    if cache is not None:
        check_options(cache)
    check_plan_options(options, rerank)
    parse_measure(tune_options.measure)
    return grid_settings(parse_grid(grid_entries), options, rerank)


def tune(
    index_dir: Path,
    queries_path: Path,
    qrels_path: Path,
    grid_entries: Sequence[str],
    options: SearchOptions,
    rerank: RerankOptions,
    tune_options: TuneOptions,
    *,
    cache: CacheOptions | None = None,
    topic_field: str = "title",
) -> TuneReport:
    """Evaluate every grid setting on the dev queries and cross-validate.

    The dev queries are the queries of ``queries_path`` judged in ``qrels_path``. Judged queries that the
    file does not hold are left out of every mean and fold (said once, on stderr), never scored as 0:
    a mean over queries that were never searched would rank settings on a number that is not theirs.
    None judged is an error."""
    settings = check_tune(grid_entries, options, rerank, tune_options, cache)
    measure, cutoff = parse_measure(tune_options.measure)
    judged = qrels_dict(read_qrels(qrels_path))
    queries = read_queries(queries_path, topic_field=topic_field, only_ids=set(judged))
    if not queries:
        raise LyreError(f"{queries_path}: none of its queries is judged in {qrels_path}; check the ids")
    qrels = dev_qrels(judged, queries, queries_path)
    folds = fold_ids(list(qrels), tune_options.folds, tune_options.seed)
    deepest = max(apply(setting, options, rerank)[1].rerank_depth for setting in settings)
    # Hold the read lock throughout: a writer must not swap the index under the first stages.
    with open_for_search(index_dir, needed_stages(options.mode), if_built=(PASSAGES,)) as opened:
        plan = SearchPlan.open(
            index_dir, options, replace(rerank, rerank_depth=deepest), cache, opened=opened
        )
        applied = fitted_settings(plan, settings, options, rerank)
        check_tune_memory(plan, applied, len(queries))
        warn_unknown_terms(plan, queries)
        plan.queries_checked = True  # the settings' searches need not check again
        progress.say(
            f"tuning {numbers.count(len(settings), 'settings')} on {numbers.count(len(queries), 'queries')} "
            f"({numbers.count(len(judged))} judged)"
        )

        started = time.perf_counter()
        lists = FirstStages(plan, queries)
        for search_options, _ in applied if plan.passages is None else []:
            lists.prepare(search_options)
        first_stage_seconds = time.perf_counter() - started
        reused = f"; {reuse_line(plan.cache)}" if plan.cache else ""
        distinct = numbers.count(len(lists.lists))
        progress.say(f"first stages: {distinct} distinct, {numbers.seconds(first_stage_seconds)}{reused}")

        started = time.perf_counter()
        values: list[dict[str, float]] = []
        with progress.bar(len(settings), "settings", unit="setting") as bar:
            for search_options, rerank_options in applied:
                run = _setting_run(plan, queries, search_options, rerank_options, lists, cutoff)
                per_query = evaluate_run(qrels, top_k(run, cutoff) if cutoff else run, [measure])
                values.append({qid: found.get(str(measure), 0.0) for qid, found in per_query.items()})
                bar.update()
        settings_seconds = time.perf_counter() - started
        if plan.cache is not None:
            plan.cache.close()

    qids = list(qrels)
    means = [_mean(per_query, qids) for per_query in values]
    order = sorted(range(len(settings)), key=lambda i: (-means[i], i))
    fold_results, cross_validated = cross_validate(settings, values, folds)
    return TuneReport(
        measure=str(measure),
        queries=len(qids),
        table=[(settings[i], means[i]) for i in order],
        folds=fold_results,
        cross_validated=cross_validated,
        first_stage_seconds=first_stage_seconds,
        settings_seconds=settings_seconds,
        judged=len(judged),
    )


def dev_qrels(
    judged: dict[str, dict[str, int]], queries: Sequence[Query], queries_path: Path
) -> dict[str, dict[str, int]]:
    """The judgments of the queries that will be searched (in the qrels' order); judged queries missing
    from ``queries_path`` are left out with one warning on stderr (even under ``--quiet``: it changes
    what the numbers mean)."""
    searched = {query.qid for query in queries}
    missing = [qid for qid in judged if qid not in searched]
    if missing:
        warning = (
            f"{numbers.count(len(searched))} of {numbers.count(len(judged), 'judged queries')} searched; the "
            f"{numbers.count(len(missing))} not in "
            f"{queries_path} (e.g. {missing[0]}) are left out of the tuning, not counted as 0"
        )
        print(f"warning: {warning}", file=sys.stderr)
    return {qid: judgments for qid, judgments in judged.items() if qid in searched}


def fitted_settings(
    plan: Any, settings: list[Setting], options: SearchOptions, rerank: RerankOptions
) -> list[tuple[SearchOptions, RerankOptions]]:
    """Each setting's options, with depth, k, refine and nprobe capped to what the index holds
    (:mod:`retrieval.sizes`); a capped grid value is said once."""
    passage_rows = plan.passages is not None and not plan.passages.rule.document_level
    size = IndexSize.of(plan.index_dir, plan.manifest, passage_rows, options.mode)
    fitted = []
    said: dict[str, None] = {}
    for setting in settings:
        search_options, rerank_options = apply(setting, options, rerank)
        capped, clauses = size.cap(search_options)
        said.update(dict.fromkeys(clauses))
        fitted.append((capped, rerank_options))
    if said:
        progress.say("; ".join(said))
    return fitted


def check_tune_memory(plan: Any, applied: list[tuple[SearchOptions, RerankOptions]], queries: int) -> None:
    """Refuse a grid whose first stages (kept for every setting to fuse) and per-query values would not fit
    in memory, before any is made."""
    sides = (plan.bm25 is not None) + (plan.dense is not None)
    depths = {tuple(getattr(o, name) for name in SIDE_SETTINGS): o.depth for o, _ in applied}
    side_depth = plan.passages.side_depth if plan.passages is not None else (lambda depth: depth)
    needed = sum(list_bytes(queries, side_depth(depth), sides) for depth in depths.values())
    needed += len(applied) * queries * VALUE_BYTES
    settings = numbers.count(len(applied), "settings")
    what = (
        f"{numbers.count(len(depths), 'first stages')} and {settings} of {numbers.count(queries, 'queries')}"
    )
    check_memory("grid", f"({settings})", needed, what)


class FirstStages:
    """The first-stage lists of each distinct first stage (depth, nprobe, refine), made once per tune:
    a hybrid's aligned lists (:mod:`retrieval.fusion.aligned`; each setting's fusion is then array
    arithmetic), otherwise the one side's lists."""

    def __init__(self, plan: Any, queries: Sequence[Query]) -> None:
        self.plan = plan
        self.queries = queries
        self.lists: dict[tuple[Any, ...], Any] = {}

    def prepare(self, options: SearchOptions) -> Any:
        """The lists of ``options``' first stage, from the plan (and its cache) the first time."""
        key = tuple(getattr(options, name) for name in SIDE_SETTINGS)
        if key not in self.lists:
            plan, queries = self.plan, self.queries
            made = plan.aligned_lists(queries, options) if plan.hybrid else plan.side_runs(queries, options)
            self.lists[key] = made
        return self.lists[key]

    def fused(self, options: SearchOptions) -> Run:
        """What the plan's first stage returns with ``options``."""
        lists = self.prepare(options)
        if self.plan.hybrid:
            return self.plan.fuse_aligned(self.queries, lists, options)
        return self.plan.fuse(self.queries, lists, options)


def _setting_run(
    plan: Any,
    queries: Sequence[Query],
    options: SearchOptions,
    rerank: RerankOptions,
    lists: FirstStages,
    cutoff: int | None,
) -> Run:
    """The run ``lyre search`` would write with these settings: the lists in memory fused when nothing
    else is needed (cut at the measure's cutoff, which is all it reads), otherwise the plan's own search,
    whose first stages come from the cache."""
    if rerank.rerank_depth == 0 and plan.passages is None:
        return lists.fused(replace(options, k=min(options.k, cutoff)) if cutoff else options)
    return replace(plan, options=options, rerank_options=rerank).search(queries)


def render(report: TuneReport, folds: int) -> str:
    """The ranked table, the cross-validation per fold, and the chosen setting."""
    width = max(len(report.measure), 6)
    lines = [f"{'rank':>4}  {report.measure:>{width}}  setting"]
    for rank, (setting, mean) in enumerate(report.table, start=1):
        lines.append(f"{rank:>4}  {numbers.measure(mean):>{width}}  {setting_label(setting)}")
    lines.append("")
    lines.append(
        f"{folds}-fold cross-validated {report.measure}: {numbers.measure(report.cross_validated)} "
        f"(each fold scored with the setting chosen on the other folds)"
    )
    lines.append(f"{'fold':>4}  {'queries':>7}  {'train':>6}  {'fold':>6}  chosen on the other folds")
    for fold in report.folds:
        train, scored = numbers.measure(fold.train_mean), numbers.measure(fold.fold_mean)
        lines.append(
            f"{fold.number:>4}  {numbers.count(fold.queries):>7}  {train:>6}  {scored:>6}  "
            f"{setting_label(fold.chosen)}"
        )
    best, mean = report.table[0]
    lines.append("")
    left_out = report.judged - report.queries
    searched = numbers.count(report.queries)
    which = f"all {searched}" if not left_out else f"the {searched} searched"
    also = (
        f" ({numbers.count(left_out, 'judged queries')} not in the queries file left out)" if left_out else ""
    )
    chosen = f"{setting_label(best)} ({report.measure} {numbers.measure(mean)})"
    lines.append(f"chosen on {which} dev queries{also}: {chosen}")
    return "\n".join(lines)


def write_report(
    out: Path,
    report: TuneReport,
    tune_options: TuneOptions,
    options: SearchOptions,
    rerank: RerankOptions,
    inputs: dict[str, Path],
) -> None:
    """The chosen settings for ``lyre search --settings``, with how they were chosen."""
    how = {
        "measure": report.measure,
        "mean": report.table[0][1],
        "dev_queries": report.queries,
        "cross_validated": {
            "mean": report.cross_validated,
            **asdict(tune_options),
            "folds": [
                {
                    "queries": f.queries,
                    "chosen": f.chosen,
                    "train_mean": f.train_mean,
                    "fold_mean": f.fold_mean,
                }
                for f in report.folds
            ],
        },
        "table": [{"setting": setting, "mean": mean} for setting, mean in report.table],
        "fixed": {"search": asdict(options), "rerank": asdict(rerank)},
        "inputs": {
            what: {"path": str(path), **({"sha256": sha256_file(path)} if path.is_file() else {})}
            for what, path in inputs.items()
        },
        "provenance": provenance(),
    }
    write_settings(out, report.chosen, how)
