// lyre serve's page: plain DOM, no build step, no network beyond this server.
// Text from the index is always inserted as text nodes; <mark> elements come from the server's spans.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { health: null, runs: null, sort: { key: "diff", ascending: false }, lastQuery: "" };

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// The text with its [start, end) spans wrapped in <mark>.
function marked(text, spans) {
  const fragment = document.createDocumentFragment();
  let at = 0;
  for (const [start, end] of spans || []) {
    fragment.append(text.slice(at, start), element("mark", {}, text.slice(start, end)));
    at = end;
  }
  fragment.append(text.slice(at));
  return fragment;
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function number(value, digits = 4) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// ---- search -------------------------------------------------------------------------------------

async function search(event) {
  if (event) event.preventDefault();
  const query = $("#q").value.trim();
  if (!query) return;
  const parameters = new URLSearchParams({ q: query, mode: $("#mode").value, k: $("#k").value });
  if (state.health.max_rerank_depth > 0) parameters.set("rerank_depth", $("#rerank-depth").value);
  $("#search-status").textContent = "searching…";
  const started = performance.now();
  try {
    const answer = await api(`/api/search?${parameters}`);
    state.lastQuery = query;
    showHits(answer);
    const seconds = ((performance.now() - started) / 1000).toFixed(3);
    $("#search-status").textContent = `${answer.hits.length} hits, ${answer.settings.tag}, ${seconds} s`;
    history.replaceState(null, "", `#search?${parameters}`);
  } catch (error) {
    $("#results").replaceChildren();
    $("#search-status").textContent = `error: ${error.message}`;
  }
}

function rankBadge(side, label, rank, mode) {
  if (!mode.includes(side) && mode !== "hybrid") return null;
  const text = rank === null ? `${label} –` : `${label} #${rank}`;
  return element("span", { class: `badge ${side}${rank === null ? " none" : ""}`, title: `rank in the ${label} list` }, text);
}

function showHits(answer) {
  const mode = answer.settings.mode;
  const items = answer.hits.map((hit) =>
    element(
      "li",
      { class: "hit", "data-docid": hit.docid },
      element(
        "div",
        { class: "hit-head" },
        element("span", { class: "rank" }, String(hit.rank)),
        element("a", { class: "title", href: "#", onclick: (event) => openDocument(event, hit.docid) }, hit.title || hit.docid),
        element("span", { class: "docid" }, hit.docid),
      ),
      hit.snippet === null ? null : element("p", { class: "snippet" }, marked(hit.snippet, hit.highlights)),
      element(
        "div",
        { class: "meta" },
        element("span", { class: "score" }, `score ${hit.score}`),
        rankBadge("bm25", "BM25", hit.bm25_rank, mode),
        rankBadge("dense", "dense", hit.dense_rank, mode),
      ),
    ),
  );
  $("#results").replaceChildren(...items);
}

// ---- documents ----------------------------------------------------------------------------------

async function openDocument(event, docid) {
  if (event) event.preventDefault();
  const parameters = state.lastQuery ? `?${new URLSearchParams({ q: state.lastQuery })}` : "";
  try {
    const documentAnswer = await api(`/api/doc/${encodeURIComponent(docid)}${parameters}`);
    $("#doc-id").textContent = documentAnswer.docid;
    $("#doc-title").replaceChildren(marked(documentAnswer.title, documentAnswer.title_highlights));
    $("#doc-text").replaceChildren(marked(documentAnswer.text, documentAnswer.highlights));
  } catch (error) {
    $("#doc-id").textContent = docid;
    $("#doc-title").textContent = "";
    $("#doc-text").textContent = `error: ${error.message}`;
  }
  $("#doc-panel").hidden = false;
}

// ---- run comparison -----------------------------------------------------------------------------

function chosen() {
  return { a: $("#run-a").value, b: $("#run-b").value, measure: $("#measure").value };
}

function queryRows() {
  const { a, b, measure } = chosen();
  return state.runs.queries.map((query) => {
    const first = query.values[a][measure] ?? 0;
    const second = query.values[b][measure] ?? 0;
    return { ...query, a: first, b: second, diff: second - first };
  });
}

function showQueries() {
  const { a, b, measure } = chosen();
  const { key, ascending } = state.sort;
  const rows = queryRows().sort((x, y) => {
    const order = key === "qid" ? x.qid.localeCompare(y.qid, undefined, { numeric: true }) : x[key] - y[key];
    return (ascending ? order : -order) || x.qid.localeCompare(y.qid, undefined, { numeric: true });
  });
  const body = rows.map((row) =>
    element(
      "tr",
      { "data-qid": row.qid, onclick: () => compare(row.qid) },
      element("td", {}, row.qid, row.text ? element("span", { class: "query-text" }, row.text) : null),
      element("td", { class: "num" }, number(row.a)),
      element("td", { class: "num" }, number(row.b)),
      element("td", { class: `num ${row.diff > 0 ? "better" : row.diff < 0 ? "worse" : ""}` }, number(row.diff)),
    ),
  );
  $("#queries tbody").replaceChildren(...body);
  for (const header of document.querySelectorAll("#queries th")) {
    header.classList.toggle("sorted", header.dataset.sort === key);
    header.classList.toggle("ascending", header.dataset.sort === key && ascending);
  }
  const means = state.runs.means;
  $("#means").textContent = `mean ${measure}: A ${number(means[a][measure])}, B ${number(means[b][measure])} (${rows.length} queries)`;
}

function sortBy(key) {
  state.sort = { key, ascending: state.sort.key === key ? !state.sort.ascending : key === "qid" };
  showQueries();
}

function movement(entry, otherName) {
  if (entry.other_rank === null) return element("span", { class: "move only", title: `not in ${otherName}` }, "only here");
  const arrow = entry.other_rank < entry.rank ? "▲" : entry.other_rank > entry.rank ? "▼" : "=";
  const kind = entry.other_rank < entry.rank ? "up" : entry.other_rank > entry.rank ? "down" : "same";
  return element(
    "a",
    { class: `move ${kind}`, href: "#", title: `rank ${entry.other_rank} in ${otherName}`, onclick: (event) => findOther(event, entry.docid) },
    `${arrow} ${otherName} #${entry.other_rank}`,
  );
}

function gradeChip(grade) {
  if (grade === null) return element("span", { class: "grade unjudged", title: "unjudged" }, "?");
  return element("span", { class: `grade g${Math.min(Math.max(grade, 0), 3)}`, title: `relevance ${grade}` }, String(grade));
}

function rankingColumn(side, label, otherLabel, id) {
  const values = Object.entries(side.values).map(([name, value]) => `${name} ${number(value)}`).join(" · ");
  const items = side.ranking.map((entry) =>
    element(
      "li",
      {
        "data-docid": entry.docid,
        class: entry.grade === null ? "unjudged-row" : `judged grade-${entry.grade}`,
        onmouseenter: () => link(entry.docid, true),
        onmouseleave: () => link(entry.docid, false),
      },
      element("span", { class: "rank" }, String(entry.rank)),
      gradeChip(entry.grade),
      element(
        "span",
        { class: "doc-title", title: entry.docid, onclick: (event) => openDocument(event, entry.docid) },
        entry.title || (entry.in_index ? entry.docid : `${entry.docid} (not in the index)`),
      ),
      movement(entry, otherLabel),
    ),
  );
  return element(
    "div",
    {},
    element("div", { class: "run-head" }, `${label}: ${side.run}`),
    element("div", { class: "run-values" }, `${values} · ${side.documents} documents`),
    element("ol", { class: "ranking", id }, ...items),
  );
}

function link(docid, on) {
  for (const row of document.querySelectorAll(".ranking li")) {
    if (row.dataset.docid === docid) row.classList.toggle("linked", on);
  }
}

function findOther(event, docid) {
  event.preventDefault();
  const column = event.target.closest("ol").id === "ranking-a" ? "#ranking-b" : "#ranking-a";
  const row = [...document.querySelectorAll(`${column} li`)].find((item) => item.dataset.docid === docid);
  link(docid, true);
  if (row) row.scrollIntoView({ block: "center", behavior: "smooth" });
  setTimeout(() => link(docid, false), 1500);
}

async function compare(qid) {
  const { a, b } = chosen();
  for (const row of document.querySelectorAll("#queries tbody tr")) row.classList.toggle("selected", row.dataset.qid === qid);
  try {
    const answer = await api(`/api/compare?${new URLSearchParams({ qid, a, b })}`);
    state.lastQuery = answer.text || "";
    const title = `${answer.qid}${answer.text ? `: ${answer.text}` : ""}`;
    $("#comparison").replaceChildren(
      element("h2", {}, title),
      element("p", { class: "muted" }, `${answer.relevant} relevant of ${answer.judged} judged documents`),
      element("div", { class: "rankings" }, rankingColumn(answer.first, "A", "B", "ranking-a"), rankingColumn(answer.second, "B", "A", "ranking-b")),
    );
    history.replaceState(null, "", `#compare?${new URLSearchParams({ qid, a, b })}`);
  } catch (error) {
    $("#comparison").replaceChildren(element("p", { class: "worse" }, `error: ${error.message}`));
  }
}

// ---- start --------------------------------------------------------------------------------------

function show(view) {
  $("#search-view").hidden = view !== "search";
  $("#compare-view").hidden = view !== "compare";
  $("#tab-search").classList.toggle("active", view === "search");
  $("#tab-compare").classList.toggle("active", view === "compare");
}

function options(select, values, selected) {
  select.replaceChildren(...values.map((value) => element("option", { value }, value)));
  if (selected !== undefined) select.value = selected;
}

async function startCompare() {
  state.runs = await api("/api/runs");
  const names = state.runs.runs;
  options($("#run-a"), names, names[0]);
  options($("#run-b"), names, names[Math.min(1, names.length - 1)]);
  options($("#measure"), state.runs.measures, state.runs.measures[0]);
  for (const select of ["#run-a", "#run-b", "#measure"]) $(select).addEventListener("change", showQueries);
  for (const header of document.querySelectorAll("#queries th")) header.addEventListener("click", () => sortBy(header.dataset.sort));
  showQueries();
}

async function start() {
  state.health = await api("/api/health");
  const health = state.health;
  $("#index-name").textContent = health.index;
  options($("#mode"), health.modes, health.defaults.mode);
  $("#k").value = health.defaults.k;
  $("#k").max = health.max_k;
  $("#rerank-depth").value = health.defaults.rerank_depth;
  $("#rerank-depth").max = health.max_rerank_depth;
  $("#rerank-label").hidden = health.max_rerank_depth === 0;
  $("#search-form").addEventListener("submit", search);
  $("#doc-close").addEventListener("click", () => ($("#doc-panel").hidden = true));
  $("#tab-search").addEventListener("click", () => show("search"));
  if (health.runs.length > 0) {
    $("#tab-compare").hidden = false;
    $("#tab-compare").addEventListener("click", () => show("compare"));
    await startCompare();
  }
  const [view, query] = location.hash.slice(1).split("?");
  const parameters = new URLSearchParams(query || "");
  if (view === "compare" && health.runs.length > 0) {
    show("compare");
    if (parameters.get("a")) $("#run-a").value = parameters.get("a");
    if (parameters.get("b")) $("#run-b").value = parameters.get("b");
    showQueries();
    if (parameters.get("qid")) await compare(parameters.get("qid"));
  } else if (view === "search" && parameters.get("q")) {
    $("#q").value = parameters.get("q");
    if (parameters.get("mode")) $("#mode").value = parameters.get("mode");
    if (parameters.get("k")) $("#k").value = parameters.get("k");
    await search();
  }
  document.body.dataset.ready = "yes";
}

start().catch((error) => {
  $("#search-status").textContent = `error: ${error.message}`;
});
