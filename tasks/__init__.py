"""The steps of shardvec: plain functions over paths, one package per part of the graph.

storage <- inputs, search <- models (building a version), changes (changing a published one),
quality (judging a build). flows/skins.py wraps the steps as Prefect tasks; tests/integration/test_layers.py
checks every import against this graph.
"""
