"""The test suite: `make test` (README.md) runs its three tiers:

- unit/: plain functions and whole builds in-process over small real data; no Prefect, no Dask
  (its conftest refuses them), under a minute (`make unit`)
- integration/: the flows on Prefect's test harness and on Dask, the CLI, readers in other
  processes, kills and full disks, the layers, the lock and the docs
- e2e/: a real `prefect server`, `shardvec serve`, a work-pool worker and Chromium, driven as
  users drive them (`prefect deployment run`, the UI), and `shardvec demo`

A package, so that the test modules and the scripts
they start import the shared helpers by one name, and pytest loads tests/conftest.py (its hooks
and fixtures) once, as tests.conftest. The helpers:

- environment: what every test process sets before numpy or Prefect is imported
- corpora: real text (gensim's Lee corpora) and the corpus/ written from it
- runs: the small settings, the flows and the CLI run in this process
- processes: this interpreter's scripts, free ports, process groups stopped or killed
- shared: what the xdist workers of a session build once (the migrated Prefect database)
- checks: assertions several modules make (rows exact)
- e2e/harness: real `shardvec server`, worker and Chromium for the end-to-end modules
"""
