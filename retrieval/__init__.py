"""lyre's retrieval library: records, readers and writers, models, fusion, the search pipeline, evaluation.

Nothing heavy is imported here, so `import retrieval` (and the CLI's `--help`) stays instant.
"""
