"""The page ``lyre serve`` shows, in a real browser (headless Chromium driven by Playwright): type a query,
read the ranked list, open a document, compare two runs. Skipped, in one line, where no Chromium is
installed (CI installs it: ``.ci/run``). ``LYRE_SCREENSHOTS=FOLDER`` keeps the two views as PNGs there.

Also, without a browser: the page and its files are served, and name no address outside the server
(no CDN: the page works offline).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers import LyreCli
from lyre.serve.options import RunViewOptions
from serve_fixtures import http, http_text, run_lines, serve_settings, serving

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
STATIC = ("index.html", "app.css", "app.js")
QUERY = "how does kneading develop gluten in bread"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path
) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("serve-page")
    index = folder / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--embed-model", tiny_bert)
    runs = []
    for mode in ("bm25", "hybrid"):
        runs.append(folder / f"{mode}.run")
        lyre(
            "-q",
            "search",
            "--index",
            index,
            "--queries",
            sample / "queries.tsv",
            "--mode",
            mode,
            "--rerank-depth",
            "0",
            "--k",
            "20",
            "--out",
            runs[-1],
        )
    options = RunViewOptions(
        runs=runs, qrels=sample / "qrels.tsv", queries=sample / "queries.tsv", compare_depth=15
    )
    with serving(index, serve_settings("hybrid", runs=options)) as server:
        yield server


def test_the_page_and_its_files_are_served_and_name_no_outside_address(served: Any) -> None:
    status, kind, page = http_text(served.url + "/")
    assert status == 200 and kind.startswith("text/html")
    assert '<script src="/static/app.js">' in page and 'href="/static/app.css"' in page
    for name in STATIC:
        status, _, text = http_text(f"{served.url}/static/{name}")
        assert status == 200 and text
        assert not re.search(r"https?://|//cdn|@import", text), name  # nothing fetched from elsewhere


@pytest.fixture(scope="module")
def page(served: Any) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="no browser driver: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Keep a PNG of the page: in the test's folder, and in ``$LYRE_SCREENSHOTS`` where set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LYRE_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["LYRE_SCREENSHOTS"]) / name)


def test_a_typed_query_lists_the_api_s_hits_and_opens_a_document(
    page: Any, served: Any, sample: Path, tmp_path: Path
) -> None:
    corpus = {doc["_id"]: doc for doc in map(json.loads, (sample / "corpus.jsonl").read_text().splitlines())}
    page.goto(served.url + "/")
    page.wait_for_selector("body[data-ready=yes]")
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    page.wait_for_selector("#results li.hit")
    _, answer = http(served.url + "/api/search?" + urlencode({"q": QUERY}))
    hits = answer["hits"]
    rows = page.locator("#results li.hit")
    assert rows.count() == len(hits) == 10
    for number, hit in enumerate(hits):
        row = rows.nth(number)
        assert row.get_attribute("data-docid") == hit["docid"]
        assert row.locator(".title").inner_text() == (hit["title"] or hit["docid"])
        assert row.locator(".score").inner_text() == f"score {hit['score']}"
        badges = row.locator(".badge").all_inner_texts()
        expected = [
            f"BM25 #{hit['bm25_rank']}" if hit["bm25_rank"] else "BM25 –",
            f"dense #{hit['dense_rank']}" if hit["dense_rank"] else "dense –",
        ]
        assert badges == expected
        marks = row.locator(".snippet mark").all_inner_texts()
        assert marks == [hit["snippet"][start:end] for start, end in hit["highlights"]]
    import Stemmer  # the index's analyzer stems with Porter: a marked word shares a stem with a query word

    stem = Stemmer.Stemmer("porter").stemWord
    query_stems = {stem(word) for word in QUERY.split()}
    marked = {mark.lower() for mark in rows.locator("mark").all_inner_texts()}
    assert marked and {stem(word) for word in marked} <= query_stems and "in" not in marked  # a stopword
    screenshot(page, "serve_search.png", tmp_path)

    rows.nth(0).locator(".title").click()
    page.wait_for_selector("#doc-panel:not([hidden])")
    first = corpus[hits[0]["docid"]]
    assert page.inner_text("#doc-id") == hits[0]["docid"]
    assert page.inner_text("#doc-text") == first["text"]
    assert page.locator("#doc-text mark").count() > 0
    page.click("#doc-close")
    assert page.locator("#doc-panel").is_hidden()


def test_the_run_comparison_sorts_queries_and_shows_both_rankings_graded(
    page: Any, served: Any, tmp_path: Path
) -> None:
    from lyre.formats.qrels import qrels_dict, read_qrels

    _, summary = http(served.url + "/api/runs")
    first, second = summary["runs"]
    qrels = qrels_dict(read_qrels(summary["qrels"]))
    page.goto(served.url + "/")
    page.wait_for_selector("body[data-ready=yes]")
    page.click("#tab-compare")
    rows = page.locator("#queries tbody tr")
    assert rows.count() == len(qrels) == len(summary["queries"])
    measure = summary["measures"][0]
    values = {query["qid"]: query["values"] for query in summary["queries"]}
    shown = [row.split("\t") for row in rows.all_inner_texts()]
    differences = [
        values[qid.split("\n")[0]][second][measure] - values[qid.split("\n")[0]][first][measure]
        for qid, *_ in shown
    ]
    assert differences == sorted(differences, reverse=True)  # largest gain of B over A first
    for cells in shown:
        qid = cells[0].split("\n")[0]
        assert cells[1:] == [
            f"{values[qid][first][measure]:.4f}",
            f"{values[qid][second][measure]:.4f}",
            f"{values[qid][second][measure] - values[qid][first][measure]:.4f}",
        ]
    page.click("#queries th[data-sort=diff]")  # sorted the other way
    again = [
        values[row.split("\t")[0].split("\n")[0]][second][measure]
        - values[row.split("\t")[0].split("\n")[0]][first][measure]
        for row in rows.all_inner_texts()
    ]
    assert again == sorted(again)

    qid = max(values, key=lambda q: abs(values[q][second][measure] - values[q][first][measure]))
    page.click(f"#queries tbody tr[data-qid='{qid}']")
    page.wait_for_selector("#ranking-a li")
    for column, run in (("#ranking-a", first), ("#ranking-b", second)):
        lines = run_lines(Path(run))[qid][:15]
        entries = page.locator(f"{column} li")
        assert [entries.nth(i).get_attribute("data-docid") for i in range(entries.count())] == [
            docid for _, docid, _ in lines
        ]
        for number, (_, docid, _) in enumerate(lines):
            grade = qrels[qid].get(docid)
            chip = entries.nth(number).locator(".grade")
            assert chip.inner_text() == ("?" if grade is None else str(grade))
            assert ("unjudged" in chip.get_attribute("class")) == (grade is None)
    values_line = page.locator(".run-values").first.inner_text()
    assert f"{measure} {values[qid][first][measure]:.4f}" in values_line

    row = page.locator("#ranking-a li", has=page.locator("a.move")).first  # a document both runs hold
    docid = row.get_attribute("data-docid")
    row.locator("a.move").click()  # finds it in the other run
    assert page.locator(f"#ranking-b li.linked[data-docid='{docid}']").count() == 1
    screenshot(page, "serve_compare.png", tmp_path)
