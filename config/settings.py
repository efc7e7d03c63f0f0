"""The one validated settings object.

Sources, strongest first: explicit overrides passed to `load_settings`, environment variables
`SHARDVEC_<SECTION>_<KNOB>` (e.g. `SHARDVEC_DASK_ADDRESS`), a user TOML file named by
`SHARDVEC_CONFIG`, then `config/default.toml`. Everything below reads the object it is given.

Long because: every section of config/default.toml is declared and validated here, one class a
section; its length is the knobs'.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shardvec.errors import ShardvecError

DEFAULT_TOML = Path(__file__).with_name("default.toml")
# Seeds reach faiss and NumPy as a C int (a negative seed or a larger one fails there)
C_INT_MAX = 2**31 - 1


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

    @model_validator(mode="after")
    def _lengths_in_order(self) -> TokenizeSettings:
        if self.min_len > self.max_len:
            raise ValueError(
                f"tokenize.min_len ({self.min_len}) is above tokenize.max_len ({self.max_len}), so "
                "no token would be kept; keep min_len <= max_len, e.g. min_len = 2 and max_len = 20"
            )
        return self


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
    seed: int = Field(ge=0, le=C_INT_MAX)


class StoreSettings(Section):
    rows_per_shard: int = Field(ge=1)
    words_dtype: Literal["float32", "float16", "int8"]
    statements_dtype: Literal["float32", "float16", "int8"]


class IndexSettings(Section):
    nlist: int = Field(ge=0)
    nprobe: int = Field(ge=1)
    target_recall: float = Field(ge=0, le=1)
    recall_sample: int = Field(ge=1)
    seed: int = Field(ge=0, le=C_INT_MAX)

    @model_validator(mode="before")
    @classmethod
    def _no_annoy_knobs(cls, values: Any) -> Any:
        old = sorted({"n_trees", "search_k"} & set(values)) if isinstance(values, dict) else []
        if old:
            raise ValueError(
                f"index.{' and index.'.join(old)} set the Annoy index, which faiss IVF replaced (issue 35): "
                "remove them and set index.nprobe (lists searched per query) and index.nlist instead."
            )
        return values


class SimilaritySettings(Section):
    k: int = Field(ge=1)
    reserve: int = Field(ge=0)
    method: Literal["auto", "exact", "partitioned", "index"]
    exact_max_statements: int = Field(ge=0)
    block_rows: int = Field(ge=1)
    tile_rows: int = Field(ge=1)
    cluster_rows: int = Field(ge=16)
    probes: int = Field(ge=2)
    kmeans_sample: int = Field(ge=1)
    kmeans_iterations: int = Field(ge=1)
    # below it the interpreter and libraries alone would not fit (tasks/search/partitioned.py BASELINE_MB)
    memory_budget_mb: int = Field(ge=512)

    @model_validator(mode="before")
    @classmethod
    def _no_annoy_method(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("method") == "annoy":
            raise ValueError(
                'similarity.method "annoy" asked the Annoy index, which faiss IVF replaced (issue 35): '
                'set similarity.method = "index" to ask the statements\' index instead.'
            )
        return values

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
    no_worker_seconds: int = Field(ge=1)
    no_progress_seconds: int = Field(ge=1)

    @field_validator("address")
    @classmethod
    def _an_address(cls, value: str) -> str:
        """Empty, or a scheduler's address with its port, as Dask's Client takes it."""
        if not value:
            return value
        scheme, _, rest = value.rpartition("://")
        try:
            where = urlsplit("//" + rest)
            port = where.port
        except ValueError:
            port = None
        if scheme not in ("", "tcp", "tls", "ws", "wss", "ucx") or not where.hostname or port is None:
            raise ValueError(
                f"dask.address {value!r} is not the address of a Dask scheduler; write its "
                'protocol, host and port, e.g. address = "tcp://10.0.0.5:8786", or leave it empty '
                "for a local cluster"
            )
        return value

    @field_validator("memory_limit")
    @classmethod
    def _a_memory_size(cls, value: str) -> str:
        memory_size(value)
        return value

    def memory_limit_bytes(self) -> int | None:
        """Each worker's limit in bytes when it is a size (None for "auto" or a share of the machine)."""
        return memory_size(self.memory_limit)


def memory_size(value: str) -> int | None:
    """dask.memory_limit as LocalCluster reads it (distributed.worker_memory.parse_memory_limit):
    None for "auto" or a share of the machine's memory (0-1], else a size in bytes."""
    from dask.utils import parse_bytes

    if value.strip() == "auto":
        return None
    try:
        size = float(value)
    except ValueError:
        try:
            size = parse_bytes(value)
        except ValueError:
            size = 0
    if not math.isfinite(size) or size <= 0:
        raise ValueError(
            f"dask.memory_limit {value!r} is not a memory size; write one with a unit, e.g. "
            'memory_limit = "4GiB", a share of the machine\'s memory such as "0.5", or "auto"'
        )
    return None if size <= 1 else int(size)


class ScheduleSettings(Section):
    nightly_cron: str
    timezone: str
    inbox_interval_seconds: int = Field(ge=0)

    @field_validator("nightly_cron")
    @classmethod
    def _a_cron_expression(cls, value: str) -> str:
        """Five fields (minute hour day month weekday), parsed by cronsim, which Prefect installs."""
        from datetime import datetime

        from cronsim import CronSim, CronSimError

        try:
            if len(value.split()) != 5:
                raise CronSimError("not five fields")
            CronSim(value, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(
                f"schedule.nightly_cron {value!r} is not a cron expression ({exc}); write five "
                'fields, minute hour day month weekday, e.g. nightly_cron = "0 2 * * *" for 02:00 '
                "every day"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _a_time_zone(cls, value: str) -> str:
        """An IANA time zone name, as Prefect's schedules require."""
        from zoneinfo import available_timezones

        if value not in available_timezones():
            raise ValueError(
                f"schedule.timezone {value!r} is not a time zone of the IANA database; write one "
                'such as timezone = "UTC" or "Europe/Berlin"'
            )
        return value


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
    word_pairs: Annotated[list[str], NoDecode]  # from the environment as paths, not as JSON
    analogies: Annotated[list[str], NoDecode]
    word_pairs_drop: float = Field(ge=0)
    word_pairs_min_coverage: float = Field(ge=0, le=1)
    analogies_min_coverage: float = Field(ge=0, le=1)

    @field_validator("word_pairs", "analogies", mode="before")
    @classmethod
    def _paths_from_text(cls, value: Any) -> Any:
        """From an environment variable: paths separated as in PATH (os.pathsep)."""
        return [p for p in value.split(os.pathsep) if p] if isinstance(value, str) else value


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

    @model_validator(mode="after")
    def _rows_budget_fits_a_worker(self) -> Settings:
        limit = None if self.dask.address else self.dask.memory_limit_bytes()
        if limit and self.similarity.memory_budget_mb * (1 << 20) > limit:
            raise ValueError(
                f"similarity.memory_budget_mb ({self.similarity.memory_budget_mb}) is more than a "
                f"worker may use (dask.memory_limit {self.dask.memory_limit!r}), so the rows stage "
                "would be killed; keep it under the limit, e.g. memory_budget_mb = 1024 with "
                'memory_limit = "4GiB"'
            )
        return self

    @property
    def data(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


class SettingsError(ValueError, ShardvecError):
    """Configuration that does not validate, explained in sentences."""


def _settings_from_files() -> Settings:
    try:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        which = os.environ.get("SHARDVEC_CONFIG") or "config/default.toml"
        raise SettingsError(
            f"{which} is not valid TOML ({exc}); fix that line, or unset SHARDVEC_CONFIG to use the defaults."
        ) from None


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration once; `overrides` win over every other source.

    Nested overrides merge into their section: `load_settings(store={"rows_per_shard": 10})`.
    """
    user = os.environ.get("SHARDVEC_CONFIG")
    if user and not Path(user).is_file():
        raise SettingsError(f"SHARDVEC_CONFIG names {user}, which is not a file; fix the path or unset it.")
    try:
        base = _settings_from_files()
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
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise SettingsError(
            f"Invalid shardvec configuration ({problems}): fix it in config/default.toml, "
            "your SHARDVEC_CONFIG file or the SHARDVEC_* environment variables."
        ) from None


def _problem(err: dict) -> str:
    """One validation error as "key: what is wrong" (a rule of ours names its keys itself)."""
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "value_error":
        msg = str(err["ctx"]["error"])
        return msg if not where or msg.startswith(where) else f"{where}: {msg}"
    return f"{where}: {err['msg']}"
