"""The unit tier: no Prefect, no Dask (tests/unit/conftest.py)."""
