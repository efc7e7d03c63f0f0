"""The test suite: `make test` (README.md). A package, so that pytest and the modules that
import `tests.conftest` load one conftest, not two copies of it."""
