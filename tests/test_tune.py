"""`lyre tune`: grids parsed and checked like the flags before any work, settings that fusion ignores
counted once, folds that never score a query with settings chosen on it, and a settings file that
`lyre search --settings` applies (typed flags winning), scoring what the tune reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import LyreCli
from lyre.basics.errors import InputError, OptionError
from lyre.retrieval.evaluation import evaluate
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.settings_file import apply, read_settings, write_settings
from lyre.retrieval.tune import cross_validate, fold_ids, grid_settings, parse_grid


def test_grid_values_and_ranges_take_their_options_types() -> None:
    grid = parse_grid(
        ["rrf-k=10:30:10", "weight=0:1:0.25", "fusion=rrf,linear", "nprobe=none,8", "remove_query_id=yes,no"]
    )
    assert grid == {
        "rrf_k": [10, 20, 30],
        "weight": [0.0, 0.25, 0.5, 0.75, 1.0],
        "fusion": ["rrf", "linear"],
        "nprobe": [None, 8],
        "remove_query_id": [True, False],
    }
    assert parse_grid(["weight=0:1:0.05"])["weight"][6] == 0.3  # no 0.30000000000000004
    assert len(parse_grid(["weight=0:1:0.05"])["weight"]) == 21
    assert parse_grid(["weight=0.5,0.5,1"])["weight"] == [0.5, 1.0]


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["mode=bm25,dense"], "'mode' is not a tunable setting"),
        (["tag=a,b"], "'tag' is not a tunable setting"),
        (["rrf-k=ten"], "'ten' is not a int value of rrf_k"),
        (["weight"], "write NAME=v1,v2"),
        (["fusion=0:1:0.5"], "fusion is not numeric"),
        (["weight=1:0:0.1"], "step > 0 and stop >= start"),
        (["weight=0:1:0"], "step > 0 and stop >= start"),
        (["weight=0:1:1e-9"], "values (at most 10,000)"),
        (["k=10", "k=20"], "k repeated"),
        (["weight=0.5,2"], "weight=2: gives weight 2.0: must be at most 1"),
        (["fusion=rrf,comb"], "fusion=comb: gives fusion comb: is not known"),
        (["depth=10,2000", "k=100"], "depth=10 k=100: gives depth 10: is below k 100"),
        ([], "give at least one"),
        (["weight=0:1:0.001", "rrf-k=1:1000:1"], "gives 1,001,000 combinations (at most 100,000)"),
    ],
)
def test_every_grid_value_is_checked_before_any_search(entries: list[str], fragment: str) -> None:
    with pytest.raises(OptionError) as caught:
        grid_settings(parse_grid(entries), SearchOptions(), RerankOptions(rerank_depth=0))
    assert caught.value.option == "grid" and fragment in str(caught.value)


def test_settings_that_fusion_ignores_count_once() -> None:
    grid = parse_grid(["fusion=rrf,linear", "rrf-k=10,20", "weight=0.2,0.8", "k=100,1000"])
    settings = grid_settings(grid, SearchOptions(), RerankOptions(rerank_depth=0))
    assert settings == [
        {"fusion": "rrf", "rrf_k": 10, "k": 100},
        {"fusion": "rrf", "rrf_k": 10, "k": 1000},
        {"fusion": "rrf", "rrf_k": 20, "k": 100},
        {"fusion": "rrf", "rrf_k": 20, "k": 1000},
        {"fusion": "linear", "weight": 0.2, "k": 100},
        {"fusion": "linear", "weight": 0.2, "k": 1000},
        {"fusion": "linear", "weight": 0.8, "k": 100},
        {"fusion": "linear", "weight": 0.8, "k": 1000},
    ]
    bm25 = grid_settings(grid, SearchOptions(mode="bm25"), RerankOptions(rerank_depth=0))
    assert bm25 == [{"k": 100}, {"k": 1000}]  # one list: nothing to fuse


def test_folds_split_every_query_once_by_the_seed() -> None:
    qids = [f"q{i}" for i in range(11)]
    folds = fold_ids(qids, 3, seed=0)
    assert sorted(qid for fold in folds for qid in fold) == sorted(qids)
    assert sorted(len(fold) for fold in folds) == [3, 4, 4]
    assert fold_ids(list(reversed(qids)), 3, seed=0) == folds  # the file's order does not matter
    assert fold_ids(qids, 3, seed=1) != folds
    with pytest.raises(OptionError, match="more than the 11 dev queries"):
        fold_ids(qids, 12, seed=0)


def test_each_fold_is_scored_with_the_setting_chosen_on_the_others() -> None:
    settings = [{"rrf_k": 10}, {"rrf_k": 60}]
    values = [
        {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0},  # best on a and b
        {"a": 0.0, "b": 0.5, "c": 1.0, "d": 1.0},  # best on c and d, and on all (0.625 > 0.5)
    ]
    results, mean = cross_validate(settings, values, [["a", "b"], ["c", "d"]])
    # fold 1 (a, b): chosen on c, d -> rrf_k 60, scores (0 + 0.5) / 2; fold 2: chosen on a, b -> rrf_k 10
    assert [(r.chosen, r.train_mean, r.fold_mean) for r in results] == [
        ({"rrf_k": 60}, 1.0, 0.25),
        ({"rrf_k": 10}, 1.0, 0.0),
    ]
    assert mean == pytest.approx(0.125)  # far below either in-sample mean: the honest estimate
    tied = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}]
    results, _ = cross_validate(settings, tied, [["a"], ["b"]])
    assert [r.chosen for r in results] == [{"rrf_k": 60}, {"rrf_k": 10}]


def test_settings_files_are_checked_and_typed_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "chosen.json"
    write_settings(path, {"fusion": "linear", "weight": 1, "nprobe": None}, {"measure": "nDCG@10"})
    settings = read_settings(path)
    assert settings == {"fusion": "linear", "weight": 1.0, "nprobe": None}
    options, rerank = apply(settings, SearchOptions(weight=0.2), RerankOptions(), keep={"weight"})
    assert (options.fusion, options.weight, options.nprobe) == ("linear", 0.2, None)
    assert rerank == RerankOptions()
    for record, problem in [
        ({"lyre_settings": 1, "settings": {"mode": "dense"}}, "sets 'mode', which is not a tunable"),
        ({"lyre_settings": 1, "settings": {"rrf_k": "60"}}, "rrf_k must be a int, not '60'"),
        ({"lyre_settings": 1, "settings": {"remove_query_id": 1}}, "must be a bool"),
        ({"settings": {}}, 'no "lyre_settings": 1 record'),
    ]:
        path.write_text(json.dumps(record))
        with pytest.raises(InputError, match=problem):
            read_settings(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"chosen\.json:1: is not a JSON settings file"):
        read_settings(path)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> Path:
    out = tmp_path_factory.mktemp("tune") / "index"
    model = "sentence-transformers/all-MiniLM-L6-v2"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", out, "--embed-model", model)
    return out


@pytest.mark.slow
def test_tune_writes_settings_that_search_applies_and_scores_as_reported(
    index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    chosen = tmp_path / "chosen.json"
    tune = [
        "tune", "--index", index, "--queries", sample / "queries.tsv", "--qrels", sample / "qrels.tsv",
        "--rerank-depth", "0", "--folds", "3", "--grid", "fusion=rrf,linear", "--grid", "rrf-k=1,60",
        "--grid", "weight=0:1:0.5", "--out", chosen,
    ]  # fmt: skip
    first = lyre(*tune)
    table = [line.split() for line in first.stdout.splitlines()[1:7]]
    assert [row[0] for row in table[:5]] == ["1", "2", "3", "4", "5"] and table[5] == []  # 5 settings
    record = json.loads(chosen.read_text())
    means = [row["mean"] for row in record["table"]]
    assert means == sorted(means, reverse=True) and len(record["cross_validated"]["folds"]) == 3
    assert f"{means[0]:.4f}" == table[0][1]
    assert (
        "first stages: 1 distinct" in first.stderr
        and "aligned hybrid lists read, 0 computed" not in first.stderr
    )
    second = lyre(*tune)
    assert (
        second.stdout == first.stdout and "30 aligned hybrid lists read, 0 computed" in second.stderr
    )  # cached

    run = tmp_path / "tuned.run"
    queries, qrels = sample / "queries.tsv", sample / "qrels.tsv"
    search = ["search", "--index", index, "--queries", queries, "--qrels", qrels]
    lyre(*search, "--rerank-depth", "0", "--settings", chosen, "--out", run)
    scored = evaluate(sample / "qrels.tsv", [run], ["nDCG@10"]).means[str(run)]["nDCG@10"]
    assert scored == pytest.approx(record["mean"], abs=1e-12)
    meta = json.loads((tmp_path / "tuned.run.meta.json").read_text())
    assert meta["settings_file"]["settings"] == record["settings"]
    assert meta["settings_file"]["overridden_by_flags"] == []
    for name, value in record["settings"].items():
        assert meta["settings"][name] == value

    other = "linear" if record["settings"]["fusion"] == "rrf" else "rrf"
    lyre(*search, "--rerank-depth", "0", "--settings", chosen, "--fusion", other, "--out", tmp_path / "o.run")
    meta = json.loads((tmp_path / "o.run.meta.json").read_text())
    assert meta["settings"]["fusion"] == other and meta["settings_file"]["overridden_by_flags"] == ["fusion"]


def test_a_bad_grid_fails_in_one_line_before_anything_is_opened(
    lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    out, index = tmp_path / "chosen.json", tmp_path / "index"
    index.mkdir()
    result = lyre(
        "tune", "--index", index, "--queries", sample / "queries.tsv", "--qrels", sample / "qrels.tsv",
        "--grid", "weight=0.5,1.5", "--out", out, "--rerank-model", "/no/such/model", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --grid weight=1.5: gives weight 1.5: must be at most 1"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == [index] and list(index.iterdir()) == []
