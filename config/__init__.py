"""shardvec configuration: the defaults in default.toml, validated once into `Settings`."""

from shardvec.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
