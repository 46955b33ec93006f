"""Plain records and the file formats lyre reads and writes: corpora, queries, qrels and TREC runs.

Imports only :mod:`basics`.
"""
