"""Models: loading (hub id or folder), embedding recipes, the token-budget batch loop, the embedder and
the reranker. Knows nothing of index folders or runs.

Imports only :mod:`basics` and :mod:`formats`.
"""
