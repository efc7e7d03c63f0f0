"""The steps of shardvec: plain functions over paths, one package per part of the graph.

storage <- inputs, search <- models (building a version), changes (changing a published one),
quality (judging a build). flows/skins.py names them as the build's steps and flows/executors.py runs them (as
Prefect tasks, or in-process); tests/integration/test_layers.py
checks every import against this graph.
"""
