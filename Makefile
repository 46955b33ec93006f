# The README's two commands: `make demo` (set up, then index + search + evaluate the bundled sample)
# and `make test` (set up, then the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where no NVIDIA GPU is visible, take the CPU build of torch (on lyre's build machines it lies on local disk).
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
FAISS_EXTRA := $(if $(HAS_GPU),gpu,cpu)
SAMPLE_INDEX ?= runs/sample-index
EMBED_MODEL ?= sentence-transformers/all-MiniLM-L6-v2
# A local folder (or hub id) of vec-ai/lychee-rerank enables the rerank step of the demo.
RERANK_MODEL ?=

.PHONY: demo test test-fast lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(HAS_GPU),,$(BIN)/pip install --quiet torch==2.13.0)
	$(BIN)/pip install --quiet -e '.[$(FAISS_EXTRA),dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/lyre index data/sample/corpus.jsonl --out $(SAMPLE_INDEX) --embed-model $(EMBED_MODEL)
	$(BIN)/lyre search --index $(SAMPLE_INDEX) --queries data/sample/queries.tsv --mode bm25 --rerank-depth 0 --out runs/sample.bm25.run
	$(BIN)/lyre search --index $(SAMPLE_INDEX) --queries data/sample/queries.tsv --mode dense --rerank-depth 0 --out runs/sample.dense.run
	$(BIN)/lyre search --index $(SAMPLE_INDEX) --queries data/sample/queries.tsv --mode hybrid --rerank-depth 0 --out runs/sample.hybrid.run
	$(if $(RERANK_MODEL),$(BIN)/lyre rerank --index $(SAMPLE_INDEX) --queries data/sample/queries.tsv --run runs/sample.hybrid.run --rerank-model $(RERANK_MODEL) --out runs/sample.reranked.run,@echo "(rerank step skipped: pass RERANK_MODEL=/path/to/lychee-rerank to run it)")
	$(BIN)/lyre eval data/sample/qrels.tsv runs/sample.*.run

# mypy checks the library packages under their import names (.ci/typecheck.py says how), settings in
# pyproject.toml's [tool.mypy]; its cache in build/ makes a second run take seconds.
TYPECHECK := $(BIN)/python .ci/typecheck.py

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(TYPECHECK)
	$(BIN)/python -m pytest -q -n auto

# The edit loop's tier: every test not marked slow (under 2 minutes on 2 cores).
test-fast: $(BIN)/.installed
	$(BIN)/ruff check .
	$(TYPECHECK)
	$(BIN)/python -m pytest -q -n auto -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(TYPECHECK)

clean:
	rm -rf runs $(VENV)
