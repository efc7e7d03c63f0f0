"""The steps of shardvec: plain functions over paths, each with a thin Prefect task skin."""
