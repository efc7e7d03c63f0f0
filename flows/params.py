"""The parameters of the flows as Prefect shows them, and the settings of one flow run: this
process's configuration plus the run's `overrides`.

A deployment is bound to the data directory (and Dask scheduler, and server) of the process
that serves it: a run's parameters may change tuning knobs, never where data is read from or
written to. Otherwise anyone who can reach the Prefect API could point a run at a folder they
control and have the nightly unpickle "previous models" from it as the service's user.
Direct calls (the CLI, tests, a script) choose their data directory freely.

`Overrides` is derived from the Settings classes: the run form shows each tuning knob with the
comment above it in config/default.toml, and refuses keys no section has.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from shardvec.config import Settings, load_settings
from shardvec.config.settings import DEFAULT_TOML, SettingsError

# where things are, not how to compute them: (name, what it is in the settings)
BOUND = [
    ("data_dir", lambda s: s.data),
    ("dask.address", lambda s: s.dask.address),
    ("server", lambda s: (s.server.host, s.server.port)),
]
# Accepted in `overrides` (a direct call passes whole settings) but not shown in the run form:
# the bound ones; [dask], which shapes the task runner before the run reads its overrides; and
# [schedule], which is read when the deployments are served.
HIDDEN = {name for name, _ in BOUND} | {"dask", "schedule"}


@cache
def knob_docs() -> dict[str, str]:
    """The comment block above each knob of config/default.toml, by "section.knob"; a knob right
    under another shares its comment (e.g. vocab.no_above)."""
    docs, section, comment, last = {}, "", [], ""
    for line in DEFAULT_TOML.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
        elif m := re.fullmatch(r"\[(\w+)\]", line):
            section, comment, last = m[1] + ".", [], ""
        elif m := re.match(r"(\w+)\s*=", line):
            last = " ".join(comment) or last
            docs[section + m[1]], comment = last, []
        else:
            comment, last = [], ""
    return docs


def _let_hidden_through(schema: dict[str, Any], model: type) -> None:
    # a key the form does not show passes the server's check (any text: run_settings validates it);
    # any other unknown key is refused: "Unevaluated properties are not allowed ('x' was unexpected)"
    if model.hidden:
        del schema["additionalProperties"]
        schema["dependentSchemas"] = {key: {"properties": {key: {}}} for key in model.hidden}
        schema["unevaluatedProperties"] = False


class Knobs(BaseModel):
    """Some knobs of a settings section; unknown ones refused, text read as the settings read it."""

    # titled as the run form's toggle between them and None says it
    model_config = ConfigDict(extra="forbid", frozen=True, title="knobs", json_schema_extra=_let_hidden_through)
    source: ClassVar[type[BaseModel]]
    hidden: ClassVar[list[str]]

    @model_validator(mode="before")
    @classmethod
    def _as_the_settings_read_it(cls, values: Any) -> Any:
        read = getattr(cls.source, "_numbers_from_text", None)  # "0" for a Literal[0, 1], as from SHARDVEC_*
        return read(values) if read is not None else values


def _knobs(source: type[BaseModel], name: str, doc: str | None = None, prefix: str = "") -> type[Knobs]:
    """`source` with every field optional (None: as configured), each described by its comment in
    config/default.toml. A hidden one is accepted but left out of the form (see
    _let_hidden_through), so that a deployment run asking to move data reaches run_settings and
    is refused in a sentence."""
    fields: dict[str, Any] = {}
    for key, field in source.model_fields.items():
        where = prefix + key
        if where in HIDDEN:
            fields[key] = (SkipJsonSchema[Any], None)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            section = _knobs(field.annotation, key.title().replace("_", "") + "Overrides", prefix=where + ".")
            fields[key] = (
                Optional[section],
                Field(None, title=key, description=f"The [{key}] knobs of config/default.toml."),
            )
        else:
            kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            fields[key] = (Optional[kind], Field(None, title=key, description=knob_docs().get(where)))
    model = create_model(name, __base__=Knobs, __doc__=doc, **fields)
    model.source, model.hidden = source, [key for key in source.model_fields if prefix + key in HIDDEN]
    return model


Overrides = _knobs(
    Settings,
    "Overrides",
    "Tuning knobs for one run, by section of config/default.toml; a knob left empty keeps its configured value.",
)


def run_settings(overrides: BaseModel | dict | None, *, deployed: bool | None = None) -> Settings:
    """The run's validated settings; in a deployment run, refused if it moves a bound one."""
    if isinstance(overrides, dict):
        try:
            overrides = Overrides.model_validate(overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            fix = (
                "name only knobs of config/default.toml, by section"
                if any(e["type"] == "extra_forbidden" for e in exc.errors())
                else "give each a value within its range, or leave it empty to keep the configured one"
            )
            raise SettingsError(f"Invalid overrides ({problems}); {fix}.") from None
    asked = load_settings(**(overrides.model_dump(exclude_none=True) if overrides else {}))
    if deployed is None:
        from prefect.runtime import deployment

        deployed = deployment.id is not None
    if deployed:
        bound = load_settings()
        for name, where in BOUND:
            if where(asked) != where(bound):
                raise SettingsError(
                    f"A deployment run may not change {name}: it is bound to what the serving "
                    "process was started with; serve another deployment for another data "
                    "directory, and change only tuning knobs in a run's overrides."
                )
        for section, when in (
            ("dask", "its Dask cluster is made before the run reads its overrides"),
            ("schedule", "the schedules are read when the deployments are served"),
        ):
            if getattr(asked, section) != getattr(bound, section):
                raise SettingsError(
                    f"A deployment run may not change [{section}]: {when}; set it in the "
                    "configuration of the serving process or worker and restart it."
                )
    return asked
