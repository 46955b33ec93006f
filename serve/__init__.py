"""``lyre serve``: one warm process that answers searches over HTTP and shows rankings on a web page.

The layer sits between ``retrieval`` (the search plan, fusion, evaluation) and ``cli``: it adds no
retrieval of its own. A served search goes through the same :class:`retrieval.plan.SearchPlan` as
``lyre search``, so its hits are the lines a run file would hold. The web framework (FastAPI, Starlette,
uvicorn) is imported only by :mod:`serve.app` and :mod:`serve.server`, never by ``lyre --help``.
"""
