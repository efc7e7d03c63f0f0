"""The `shardvec` command: each verb one call to the function of its name in shardvec/api.py, then its output.

Long because: every verb of the command line is declared here, its options and help text in
the Typer signature (docs/cli.md is generated from it); each verb is one API call."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from shardvec import api
from shardvec.errors import ShardvecError

app = typer.Typer(
    help="Keep the semantic vectors of a growing corpus up to date, and read them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
query_app = typer.Typer(
    help="Read the published version: nearest words, similar statements, rows.", no_args_is_help=True
)
app.add_typer(query_app, name="query")
alerts_app = typer.Typer(
    help="Automations on the Prefect server: crashed runs marked, alerts sent.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

DataOpt = Annotated[Optional[Path], typer.Option("--data", "-d", help="Data directory (default: config data_dir).")]
KOpt = Annotated[int, typer.Option("-k", min=1, help="How many results.")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def sample(data: DataOpt = None) -> None:
    """Write the bundled sample corpus (real text shipped with gensim) into DATA/corpus."""
    for path, n in api.sample(data).items():
        typer.echo(f"wrote {n:>6} records  {path}")


ForceOpt = Annotated[bool, typer.Option("--force", help="Publish even if the quality gate refuses the models.")]


@app.command()
def nightly(
    data: DataOpt = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the nightly flow now: new partitions in, models updated, a new version published."""
    report = api.nightly(data, force=force)
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=str))


def _day(help: str):
    return typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help=help)


@app.command()
def backfill(
    start: Annotated[Optional[datetime], _day("First partition of the range (inclusive).")] = None,
    end: Annotated[Optional[datetime], _day("Last partition of the range (inclusive).")] = None,
    partitions: Annotated[
        Optional[list[str]], typer.Option("--partition", "-p", help="A partition by name (repeatable).")
    ] = None,
    mode: Annotated[str, typer.Option(help="update: train on what is not yet in; rebuild: from scratch.")] = "update",
    data: DataOpt = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reprocess a range of partitions (or all) and publish: --mode update or rebuild."""
    report = api.backfill(start, end, partitions, mode=mode, data=data, force=force)
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=str))


@app.command()
def add(
    source: Annotated[str, typer.Argument(help="A .jsonl, .txt or .parquet file, or - for stdin.")],
    data: DataOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="Format of stdin: jsonl or txt.")] = "jsonl",
    replace: Annotated[bool, typer.Option("--replace", help="A live id gets the new text.")] = False,
) -> None:
    """Add statements now: searchable and related when the command returns. JSON Lines records
    may also say "op": "replace" or "op": "delete"."""
    result = api.add(source, data, fmt=fmt, replace=replace)
    typer.echo(" ".join(f"{k}={v}" for k, v in result.items() if k != "segment"))


@app.command()
def delete(
    ids: Annotated[list[str], typer.Argument(help="Statement ids, or - to read them from stdin, one a line.")],
    data: DataOpt = None,
) -> None:
    """Delete statements now: gone from searches and rows when the command returns, for good."""
    result = api.delete(ids, data)
    typer.echo(" ".join(f"{k}={result[k]}" for k in ("deleted", "missing", "quarantined", "rows_updated", "seconds")))


@app.command()
def push(
    to: Annotated[str, typer.Option("--to", help="The object store to push to, e.g. s3://bucket/prefix.")],
    data: DataOpt = None,
) -> None:
    """Upload the live version to an object store and commit it there, for readers on other machines
    (`shardvec.open("s3://bucket/prefix")`); files already there are not sent again."""
    result = api.push(to, data)
    typer.echo(" ".join(f"{k}={v}" for k, v in result.items()))


@app.command()
def versions(data: DataOpt = None) -> None:
    """The kept versions, oldest first: when, statements, quality; * marks the live one, and a version
    a killed run finished but never made live says so."""
    found = api.versions(data)
    if not found:
        typer.echo("No version is published here yet; run `shardvec nightly` first.")
    for v in found:
        quality = " ".join(f"{k}={val}" for k, val in v["quality"].items())
        never = "" if v["live"] or v["was_live"] else "  (never live)"
        typer.echo(
            f"{'*' if v['live'] else ' '} {v['version']}  {v['created_by'] or '':<8} "
            f"{v['statements'] or 0:>8} statements  {quality}{never}"
        )


@app.command()
def rollback(
    version: Annotated[
        Optional[str], typer.Argument(help="A kept version (default: the one before the live one).")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Make an earlier kept version live again; adds, replaces and deletes made since are kept."""
    out = api.rollback(version, data)
    typer.echo(
        f"live: version {out['version']} (was {out['from']}); {out['ops_replayed']} acknowledged "
        "operations made since it replayed on top"
    )


@app.command()
def verify(data: DataOpt = None) -> None:
    """Check the live version's files against their checksums, and that its segments and the ledger can be read."""
    found = api.verify(data)
    for p in found.problems:
        typer.echo(f"damaged: {p}", err=True)
    where = found.data
    if found.ledger:  # a rebuild replays the ledger: it cannot mend it
        _fail(
            f"{len(found.ledger)} ledger file(s) in {where} cannot be read; they are the only record of "
            "acknowledged adds and deletes: restore them from a backup, then run `shardvec verify` again.",
            code=1,
        )
    if found.damaged:
        _fail(
            f"{len(found.damaged)} problem(s) in {where}; run `shardvec backfill --mode rebuild` to publish a "
            "whole version again.",
            code=1,
        )
    typer.echo(f"ok: version {found.version} is whole")


@app.command()
def history(
    data: DataOpt = None,
    last: Annotated[int, typer.Option(min=1, help="How many runs.")] = 20,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the trend into this .png or .svg file.")] = None,
) -> None:
    """The quality of every run, night by night: published or refused, metrics and drift."""
    from shardvec.tasks.quality import history_table

    found = api.history(data, last=last, plot=plot)
    if not found.runs:
        typer.echo("No run has been evaluated here yet; run `shardvec nightly` first.")
        return
    typer.echo(history_table(found.runs))
    if found.plot:
        typer.echo(f"drew the last {len(found.runs)} runs into {found.plot}")
    for e in found.runs:
        for reason in e.get("gate", []):
            typer.echo(f"{e['at'][:16]} refused: {reason}")


@app.command()
def server(
    data: DataOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default: [server] host).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default: [server] port).")] = None,
) -> None:
    """Start the Prefect server and UI (127.0.0.1:4200 by default), serving DATA/reports/ beside them."""
    from shardvec.server import REPORTS_PATH, check_free, checked_reports, open_to_others, run, url

    s = api.settings(data)
    host, port = host or s.server.host, port or s.server.port
    check_free(host, port)
    reports = checked_reports(s.data)
    if warning := open_to_others(host):
        typer.echo(f"warning: {warning}", err=True)
    at = url(host, port)
    typer.echo(
        f"Prefect UI and API at {at}, runs' reports of {reports} at "
        f"{at}{REPORTS_PATH}/; in other shells: export PREFECT_API_URL={at}/api"
    )
    run(host, port, reports)


@app.command()
def serve(data: DataOpt = None) -> None:
    """Serve the nightly (cron), backfill and add-statements deployments until stopped."""
    from shardvec.flows.runtime import api_url
    from shardvec.flows.serve import NAMES, serve_all

    if not api_url():
        _fail(
            "No Prefect server is configured: start one with `shardvec server`, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api and run `shardvec serve` again."
        )
    from shardvec.alerts import install

    s = api.settings(data)
    install()  # silent runs marked Crashed, and the alerts of the webhook `alerts install --webhook` saved
    typer.echo("Trigger them with: " + "; ".join(f"prefect deployment run '{n}'" for n in NAMES.values()))
    serve_all(s)


@alerts_app.command("install")
def alerts_install(
    webhook: Annotated[
        Optional[str],
        typer.Option(
            help="POST a JSON alert here when a run fails or crashes, the quality gate refuses a run, or a run "
            "quarantines input records: one call a run, with a link to its page in the UI. Saved: later "
            "installs without it (and `shardvec serve`) keep using it."
        ),
    ] = None,
    file: Annotated[Optional[Path], typer.Option(help="The automations to install.")] = None,
) -> None:
    """Install deploy/automations.yaml on the Prefect server: silent runs marked Crashed, and alerts."""
    from shardvec.flows.runtime import api_url
    from shardvec.alerts import AUTOMATIONS, install

    if not api_url():
        _fail(
            "No Prefect server is configured: start one with `shardvec server`, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api and run this again."
        )
    for name in install(webhook, file or AUTOMATIONS):
        typer.echo(f"installed automation {name!r}")
    if not webhook:
        from shardvec.alerts import saved_webhook

        if saved_webhook() is None:
            typer.echo("(no --webhook given nor saved before: only the automations that send nothing were installed)")


@app.command("mark-crashed")
def mark_crashed(data: DataOpt = None) -> None:
    """Mark the runs of DATA whose process is gone (killed, rebooted) as Crashed in Prefect."""
    marked = api.mark_crashed(data)
    typer.echo("\n".join(f"marked flow run {m} Crashed" for m in marked) or "no dead runs found")


ExactOpt = Annotated[
    bool, typer.Option("--exact", help="Scan every vector (recall 1.0, slower) instead of asking the index.")
]


# The verbs are the reader's (`Store.neighbours`, `.similar`, `.row`); word, text and id are the
# names of the first release, kept as hidden aliases.
@query_app.command("neighbours")
@query_app.command("word", hidden=True)
def query_word(
    word: Annotated[str, typer.Argument(help="A word of the published vocabulary.")],
    k: KOpt = 10,
    data: DataOpt = None,
    exact: ExactOpt = False,
) -> None:
    """The words nearest to WORD."""
    store = _open(data)
    for hit in store.neighbours(word, k, exact=exact or None):
        typer.echo(f"{hit.score:8.4f}  {hit.key}")


@query_app.command("similar")
@query_app.command("text", hidden=True)
def query_text(
    text: Annotated[str, typer.Argument(help="Any text; it is embedded with the published models.")],
    k: KOpt = 10,
    data: DataOpt = None,
    exact: ExactOpt = False,
) -> None:
    """The published statements most similar to TEXT."""
    store = _open(data)
    hits = store.similar(text, k, exact=exact or None)
    if not hits:
        typer.echo("(no known term in that text; nothing is similar)")
    for hit in hits:
        typer.echo(f"{hit.score:8.4f}  {hit.key}  {_short(hit.text)}")


@query_app.command("row")
@query_app.command("id", hidden=True)
def query_id(
    statement_id: Annotated[str, typer.Argument(metavar="ID", help="A live statement's id.")], data: DataOpt = None
) -> None:
    """The stored similarity row of statement ID."""
    store = _open(data)
    typer.echo(f"{statement_id}: {_short(store.text(statement_id))}")
    for hit in store.row(statement_id):
        typer.echo(f"{hit.score:8.4f}  {hit.key}  {_short(hit.text)}")


@app.command("import")
def import_vectors(
    source: Annotated[Path, typer.Argument(help="A word2vec (.txt/.bin), GloVe (.txt) or fastText (.bin) file.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Publish as DATA/vectors/NAME.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, word2vec, word2vec-binary, glove or fasttext.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Stored as float32, float16 or int8.")] = "float32",
    data: DataOpt = None,
) -> None:
    """Import existing word vectors into an on-disk space that needs almost no RAM to read."""
    out = api.import_vectors(source, name, fmt=fmt, dtype=dtype, data=data)
    typer.echo(
        f"imported {out['words']} {out['format']} vectors of dimension {out['dim']} as {out['dtype']} "
        f"into {out['vectors']}" + (" (with fastText n-grams for new words)" if out["subwords"] else "")
    )
    if out["quarantined"]:
        typer.echo(f"{out['quarantined']} bad lines quarantined under {out['quarantine']}", err=True)


@app.command("export")
def export(
    space: Annotated[str, typer.Argument(help="words, statements, or the NAME of imported vectors.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file (word2vec) or folder (projector) to write.")],
    to: Annotated[str, typer.Option("--to", help="word2vec, word2vec-binary or projector.")] = "word2vec",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N rows.")] = None,
    keys: Annotated[Optional[Path], typer.Option(help="Projector: a file of keys to show, one a line.")] = None,
    data: DataOpt = None,
) -> None:
    """Export a published space as word2vec, or as TensorBoard projector files for a subset."""
    done = api.export(space, out, to=to, limit=limit, keys=keys, data=data)
    if to == "projector":
        typer.echo(f"wrote {done['rows']} rows to {out}/tensors.tsv, metadata.tsv, projector_config.pbtxt")
    else:
        typer.echo(f"wrote {done['rows']} vectors of dimension {done['dim']} to {out}")


@app.command()
def demo(data: DataOpt = None) -> None:
    """Sample corpus + nightly run + a few example queries: the one-command tour."""
    for path, n in api.demo(data)["sample"].items():
        typer.echo(f"wrote {n:>6} records  {path}")
    store = api.open(data)
    for word in ("government", "music", "computer"):
        if word in store.words:
            typer.echo(f"\n$ shardvec query neighbours {word} -k 5")
            query_word(word, 5, data)
    typer.echo('\n$ shardvec query similar "firefighters battle bushfires in new south wales" -k 3')
    query_text("firefighters battle bushfires in new south wales", 3, data)
    first = store.statements.key(0)
    typer.echo(f"\n$ shardvec query row {first}")
    query_id(first, data)


def _open(data: Path | None):
    return api.open(data)


def _short(text: str | None, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def main() -> None:
    # Every flow run started from here (locally, or by `shardvec serve`) sends Prefect a heartbeat
    # every 30 s, so a killed run is marked Crashed (deploy/automations.yaml). Set before any
    # command imports Prefect, which reads its settings once.
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    try:
        app()
    except ShardvecError as exc:  # every error a user acts on: its message says how
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a file too large, no permission: the system said no
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(
            f"error: {exc.strerror or exc}{where}. Nothing new was published; free space or fix the "
            "permissions of the data directory, then run again.",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
