"""The documents that describe the code agree with it: docs/cli.md is what Typer generates from
the CLI today (every verb and option, with its help), and the README's links lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_cli_reference_is_the_cli(tmp_path):
    out = tmp_path / "cli.md"
    typer = Path(sys.executable).parent / "typer"
    subprocess.run(
        [
            str(typer),
            "shardvec.cli",
            "utils",
            "docs",
            "--name",
            "shardvec",
            "--title",
            "The shardvec command line",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    assert out.read_text() == (REPO / "docs" / "cli.md").read_text(), (
        "docs/cli.md is out of date with shardvec/cli.py: run `make docs` and commit it"
    )


def test_every_relative_link_of_the_docs_leads_to_a_file():
    for doc in [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "benchmarks" / "README.md",
        REPO / "deploy" / "README.md",
    ]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to {target}, which does not exist"
