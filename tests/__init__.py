"""The test suite: `make test` (README.md). A package, so that the test modules and the scripts
they start import the shared helpers by one name (tests.corpora, tests.runs, tests.processes,
tests.checks) and pytest loads tests/conftest.py once, as tests.conftest."""
