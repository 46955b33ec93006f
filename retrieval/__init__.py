"""The query side: the search plan, fusion, normalisation, reranking of runs, the splice, evaluation.

Imports every lower layer (:mod:`indexes`, :mod:`models`, :mod:`formats`, :mod:`basics`), never :mod:`cli`.
Nothing heavy is imported here, so `import retrieval` (and the CLI's `--help`) stays instant.
"""
