"""The one validated settings object.

Sources, strongest first: explicit overrides passed to `load_settings`, environment variables
`SHARDVEC_<SECTION>_<KNOB>` (e.g. `SHARDVEC_DASK_ADDRESS`), a user TOML file named by
`SHARDVEC_CONFIG`, then `config/default.toml`. Everything below reads the object it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_TOML = Path(__file__).with_name("default.toml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_from_text(cls, values: Any) -> Any:
        """An environment variable is text: "0" must mean 0 for a knob whose choices are numbers
        (e.g. word2vec.sg), as `sg = 0` does in TOML. Pydantic compares Literal choices strictly."""
        if not isinstance(values, dict):
            return values
        out = dict(values)
        for name, value in values.items():
            field = cls.model_fields.get(name)
            if field is None or not isinstance(value, str) or get_origin(field.annotation) is not Literal:
                continue
            choices = get_args(field.annotation)
            if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
                try:
                    out[name] = int(value.strip())
                except ValueError:
                    pass  # left as text: the Literal check names the choices
        return out


class CorpusSettings(Section):
    batch_size: int = Field(ge=1)
    max_record_bytes: int = Field(ge=16)
    on_duplicate: Literal["reject", "update"]


class TokenizeSettings(Section):
    min_len: int = Field(ge=1)
    max_len: int = Field(ge=1)
    deaccent: bool


class VocabSettings(Section):
    max_terms: int = Field(ge=1)
    no_below: int = Field(ge=1)
    no_above: float = Field(gt=0, le=1)
    hashing: bool
    hash_buckets: int = Field(ge=16)


class LsiSettings(Section):
    num_topics: int = Field(ge=1)
    chunksize: int = Field(ge=1)
    power_iters: int = Field(ge=0)
    extra_samples: int = Field(ge=0)


class Word2VecSettings(Section):
    vector_size: int = Field(ge=1)
    window: int = Field(ge=1)
    min_count: int = Field(ge=1)
    max_final_vocab: int = Field(ge=1)
    epochs: int = Field(ge=1)
    sg: Literal[0, 1]
    workers: int = Field(ge=1)
    seed: int


class StoreSettings(Section):
    rows_per_shard: int = Field(ge=1)
    words_dtype: Literal["float32", "float16", "int8"]
    statements_dtype: Literal["float32", "float16", "int8"]


class IndexSettings(Section):
    n_trees: int = Field(ge=1)
    search_k: int = Field(ge=1)
    recall_sample: int = Field(ge=1)
    seed: int


class SimilaritySettings(Section):
    k: int = Field(ge=1)
    reserve: int = Field(ge=0)
    method: Literal["auto", "exact", "partitioned", "annoy"]
    exact_max_statements: int = Field(ge=0)
    block_rows: int = Field(ge=1)
    tile_rows: int = Field(ge=1)
    cluster_rows: int = Field(ge=16)
    probes: int = Field(ge=2)
    kmeans_sample: int = Field(ge=1)
    kmeans_iterations: int = Field(ge=1)
    # below it the interpreter and libraries alone would not fit (tasks/partitioned.BASELINE_MB)
    memory_budget_mb: int = Field(ge=512)

    @property
    def width(self) -> int:
        """Neighbours stored per row: the k readers get, and the reserve a delete shifts up."""
        return self.k + self.reserve

    def rows_method(self, statements: int) -> str:
        """The method that computes the rows of a corpus this size."""
        if self.method != "auto":
            return self.method
        return "exact" if statements <= self.exact_max_statements else "partitioned"


class DaskSettings(Section):
    address: str
    n_workers: int = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    memory_limit: str


class ScheduleSettings(Section):
    nightly_cron: str
    timezone: str
    inbox_interval_seconds: int = Field(ge=0)


class ServerSettings(Section):
    host: str
    port: int = Field(ge=1, le=65535)


class QualitySettings(Section):
    gate: bool
    analogy_drop: float = Field(ge=0)
    wordsim353_drop: float = Field(ge=0)
    simlex999_drop: float = Field(ge=0)
    rows_recall_drop: float = Field(ge=0)
    index_recall_drop: float = Field(ge=0)
    rows_recall_floor: float = Field(ge=0, le=1)
    drift_sample: int = Field(ge=1)
    drift_words: int = Field(ge=1)


class PublishSettings(Section):
    keep_versions: int = Field(ge=1)
    wait_for_run_seconds: int = Field(ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHARDVEC_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path
    corpus: CorpusSettings
    tokenize: TokenizeSettings
    vocab: VocabSettings
    lsi: LsiSettings
    word2vec: Word2VecSettings
    store: StoreSettings
    index: IndexSettings
    similarity: SimilaritySettings
    dask: DaskSettings
    schedule: ScheduleSettings
    server: ServerSettings
    quality: QualitySettings
    publish: PublishSettings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_TOML]
        if os.environ.get("SHARDVEC_CONFIG"):
            files.append(Path(os.environ["SHARDVEC_CONFIG"]))
        # TomlConfigSettingsSource merges later files over earlier ones.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=files, deep_merge=True))

    @property
    def data(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


class SettingsError(ValueError):
    """Configuration that does not validate, explained in sentences."""


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration once; `overrides` win over every other source.

    Nested overrides merge into their section: `load_settings(store={"rows_per_shard": 10})`.
    """
    user = os.environ.get("SHARDVEC_CONFIG")
    if user and not Path(user).is_file():
        raise SettingsError(f"SHARDVEC_CONFIG names {user}, which is not a file; fix the path or unset it.")
    try:
        base = Settings()
        if not overrides:
            return base
        merged = base.model_dump()
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(
            f"Invalid shardvec configuration ({problems}). Fix config/default.toml, "
            "your SHARDVEC_CONFIG file or the SHARDVEC_* environment variables."
        ) from None
