"""The index side: everything that builds or reads an index folder (ingest, docstore, manifest and the
stage runner, BM25, the embedding store, encoding and its engines, the Faiss shards).

Imports :mod:`basics`, :mod:`formats` and :mod:`models`, never :mod:`retrieval` or :mod:`cli`.
"""
