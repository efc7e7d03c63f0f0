"""The test suite: `make test` (README.md). A package, so that the test modules and the scripts
they start import the shared helpers by one name, and pytest loads tests/conftest.py (its hooks
and fixtures) once, as tests.conftest. The helpers:

- environment: what every test process sets before numpy or Prefect is imported
- corpora: real text (gensim's Lee corpora) and the corpus/ written from it
- runs: the small settings, the flows and the CLI run in this process
- processes: this interpreter's scripts, free ports, process groups stopped or killed
- shared: what the xdist workers of a session build once (the migrated Prefect database)
- checks: assertions several modules make (rows exact)
- e2e: real `shardvec server`, worker and Chromium for the end-to-end modules
"""
