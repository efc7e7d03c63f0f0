"""Prefect flows: which steps run, in what order, on which task runner. No numerics here."""
