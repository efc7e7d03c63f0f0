"""The safety net: add, replace, delete, nightly, backfill, rollback, readers and SIGKILL in
random orders, checked after every step against a plain model of what must be live.

The model is the contract of docs/operations.md ("The live statements"): the records of the corpus
partitions in the live version's watermark (a repeated id keeps its first record), then every
acknowledged add, replace and delete in the order they were acknowledged. After every step:
exactly the model's ids are live with the model's texts, every stored similarity row equals an
exact recompute over the live statements, and `verify` finds the version whole.

Between operations a rule changes a setting (corpus.max_record_bytes, the tokenizer, the rows
method, the rows per shard): a limit screens what comes in after it, never what was acknowledged
before it (issue 33), so the model applies each limit to the adds made under it.

SHARDVEC_LIFECYCLE_EXAMPLES=20 runs more sequences than CI does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shardvec
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.versions import NotPublishedError
from tests.checks import read_current
from shardvec.tasks.changes.release import verify
from shardvec.tasks.changes.release import list_versions, rollback
from shardvec.tasks.changes.segments import Statements
from tests.processes import kill_group_and_check_it_landed
from tests.runs import backfill_in_process, nightly_in_process
from tests.checks import assert_rows_exact
from tests.corpora import SENTENCES

ROOT = Path(__file__).parents[2]
IDS = [f"s{i}" for i in range(8)] + ["dup/a", "dup/b", "bg/150", "bg/151", "2026-11-01/lee.txt:3"]
TEXT = st.integers(0, len(SENTENCES) - 1).map(lambda i: SENTENCES[i])
# statements of 4-9 kB: over the low corpus.max_record_bytes below, under the configured one
BIG_TEXT = st.integers(0, len(SENTENCES) - 30).map(lambda i: " ".join(SENTENCES[i : i + 30])[:9000])
ADD_TEXT = st.one_of(TEXT, TEXT, BIG_TEXT)
# (section, knob, value): what the settings rules may set. The low limit stays above every record of
# the base corpus (3,887 bytes at most) and of the partitions the rules write, which are short.
LIMITS = [("corpus", "max_record_bytes", 4000), ("corpus", "max_record_bytes", 1_000_000)]
SETTINGS = [
    ("tokenize", "min_len", 3),
    ("tokenize", "min_len", 2),
    ("tokenize", "max_len", 12),
    ("tokenize", "max_len", 20),
    ("tokenize", "deaccent", True),
    ("tokenize", "deaccent", False),
    ("similarity", "method", "exact"),
    ("similarity", "method", "partitioned"),
    ("similarity", "method", "auto"),
    ("store", "rows_per_shard", 100),
    ("store", "rows_per_shard", 256),
]
ENV = ("SHARDVEC_CORPUS_MAX_RECORD_BYTES",)
STEPS: list[int] = []  # one entry per step checked, over all sequences of a test run
CHANGED: list[tuple] = []  # the settings changed, over all sequences

# A script's first import: a Prefect home of its own inside the pytest run's folder, which the run
# removes at its end, so SIGKILLed scripts leave nothing in /tmp (and one BLAS thread).
ENVIRONMENT = "import tests.environment\n"
NIGHTLY = (
    ENVIRONMENT
    + """
import json, sys
from pathlib import Path
from tests.runs import nightly_in_process
nightly_in_process(Path(sys.argv[1]), **json.loads(sys.argv[2]))
"""
)

ADD = """
import json, sys
import shardvec
op, records = json.loads(sys.argv[2])
shardvec.delete(records, sys.argv[1]) if op == "delete" else shardvec.add(records, sys.argv[1], replace=op == "replace")
print("acknowledged", flush=True)
"""


def live_statements(data: Path) -> dict[str, str]:
    view = Statements(data, DataDir(data).current())
    out = {}
    for r in range(len(view)):
        if not view.is_dead(r):
            key = view.key(r)
            assert key not in out, f"{key} is live twice"
            out[key] = view.text(r)
    return out


class Lifecycle(RuleBasedStateMachine):
    source: Path  # a published data directory (the session fixture), copied per sequence
    api_url: str

    @initialize()
    def start(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.data = self.tmp / "data"
        shutil.copytree(self.source, self.data)
        base = live_statements(self.data)
        self.corpus: dict[str, list[tuple[str, str]]] = {"base": list(base.items())}  # partition -> records
        self.partitions = {read_current(self.data)["version"]: ["base"]}  # version -> partitions in it
        self.ops: list[tuple[str, str, str | None]] = []  # acknowledged (op, id, text), in order
        self.next_day = 4
        self.kills = 0
        self.reader = shardvec.open(self.data)
        self.more: dict[str, dict] = {}  # the settings the rule changed, for the runs
        self.limit = 1_000_000  # corpus.max_record_bytes as configured
        self.environ = {k: os.environ.get(k) for k in ENV}  # shardvec.add reads the configuration

    def teardown(self):
        for key, value in getattr(self, "environ", {}).items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the model ---------------------------------------------------------------------------
    def expected(self) -> dict[str, str]:
        live: dict[str, str] = {}
        for part in self.partitions[read_current(self.data)["version"]]:
            for id_, text in self.corpus[part]:
                live.setdefault(id_, text)  # corpus.on_duplicate = "reject": the first record stays
        for op, id_, text in self.ops:
            if op == "delete":
                live.pop(id_, None)
            else:
                live[id_] = text
        return live

    def model_ops(self, op: str, pairs: list[tuple[str, str | None]]) -> list[tuple[str, str, str | None]]:
        """What an add/replace/delete batch acknowledges, by the model's rules."""
        live, acked = self.expected(), []
        for id_, text in pairs:
            if op == "delete":
                if id_ in live:
                    live.pop(id_)
                    acked.append(("delete", id_, None))
            elif len(json.dumps({"id": id_, "text": text}, ensure_ascii=False).encode()) + 1 > self.limit:
                continue  # quarantined at intake
            elif live.get(id_) != text and (op == "replace" or id_ not in live):
                live[id_] = text
                acked.append(("put", id_, text))
        return acked

    def published(self, report_version: str | None) -> None:
        """Record the partitions a newly live version holds (from its watermark)."""
        current = read_current(self.data)
        if current["version"] not in self.partitions:
            names = current["watermark"]["partitions"]
            self.partitions[current["version"]] = ["base"] + [p for p in names if p in self.corpus]

    # -- the rules ------------------------------------------------------------------------
    @rule(setting=st.sampled_from(LIMITS))
    def change_the_record_limit(self, setting):
        self.change_a_setting(setting)
        os.environ["SHARDVEC_CORPUS_MAX_RECORD_BYTES"] = str(setting[2])  # what shardvec.add reads
        self.limit = setting[2]

    @rule(setting=st.sampled_from(SETTINGS))
    def change_a_build_setting(self, setting):
        self.change_a_setting(setting)

    def change_a_setting(self, setting):
        section, knob, value = setting
        CHANGED.append(setting)
        self.more.setdefault(section, {})[knob] = value

    @rule(
        op=st.sampled_from(["add", "replace"]),
        batch=st.lists(st.tuples(st.sampled_from(IDS), ADD_TEXT), min_size=1, max_size=4),
    )
    def add(self, op, batch):
        expected = self.model_ops(op, batch)
        shardvec.add([{"id": i, "text": t} for i, t in batch], self.data, replace=op == "replace")
        self.ops += expected

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3))
    def delete(self, ids):
        expected = self.model_ops("delete", [(i, None) for i in ids])
        assert Adder(self.data).delete(ids).deleted == len(expected)
        self.ops += expected

    @rule(records=st.lists(st.tuples(st.sampled_from(IDS + ["n1", "n2", "n3"]), TEXT), min_size=1, max_size=4))
    def new_partition_then_nightly(self, records):
        name = f"2026-11-{self.next_day:02d}"
        self.next_day += 1
        path = self.data / "corpus" / name / "part.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in records))
        self.corpus[name] = records
        report = nightly_in_process(self.data, **self.more)
        assert report["status"] == "published"
        self.published(report["version"])

    @rule(mode=st.sampled_from(["update", "rebuild"]))
    def backfill(self, mode):
        report = backfill_in_process(self.data, mode=mode, **self.more)
        assert report["status"] == "published"
        self.published(report["version"])

    @precondition(lambda self: len(self.partitions) > 1)
    @rule()
    def roll_back(self):
        # the newest kept version older than the live one that the model saw live (not one a
        # killed nightly finished, manifest written and fsynced, but never swapped in)
        live = read_current(self.data)["version"]
        older = [
            v["version"] for v in list_versions(self.data) if v["version"] < live and v["version"] in self.partitions
        ]
        if not older:
            with pytest.raises(NotPublishedError, match="was ever live"):
                rollback(self.data)
            return
        out = rollback(self.data)
        assert out["version"] == older[-1]
        self.published(None)

    @rule()
    def reader_reopens(self):
        self.reader.refresh()
        assert len(self.reader) == len(self.expected())
        for id_, text in list(self.expected().items())[-5:]:
            assert self.reader.text(id_) == text

    @precondition(lambda self: self.kills < 2)
    @rule(after=st.floats(0.5, 12.0), new=st.booleans())
    def sigkill_a_nightly(self, after, new):
        self.kills += 1
        if new:  # give it something to do
            name = f"2026-11-{self.next_day:02d}"
            self.next_day += 1
            records = [("n9", SENTENCES[self.next_day]), ("s0", SENTENCES[self.next_day + 1])]
            path = self.data / "corpus" / name / "part.jsonl"
            path.parent.mkdir(parents=True)
            path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in records))
            self.corpus[name] = records
        proc = subprocess.Popen(
            [sys.executable, "-c", NIGHTLY, str(self.data), json.dumps(self.more)],
            cwd=ROOT,
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(after)
        except subprocess.TimeoutExpired:
            kill_group_and_check_it_landed(proc.pid, proc)
        self.published(None)  # the kill may have landed before or after the swap: both are fine

    @precondition(lambda self: self.kills < 2)
    @rule(
        op=st.sampled_from(["add", "replace", "delete"]),
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3),
        texts=st.lists(ADD_TEXT, min_size=3, max_size=3),
        after=st.floats(0.5, 4.0),
    )
    def sigkill_an_add(self, op, ids, texts, after):
        self.kills += 1
        pairs = [(i, None if op == "delete" else t) for i, t in zip(ids, texts)]
        expected = self.model_ops(op, pairs)
        before = read_current(self.data).get("ledger", 0)
        arg = [op, ids if op == "delete" else [{"id": i, "text": t} for i, t in pairs]]
        proc = subprocess.Popen(
            [sys.executable, "-c", ADD, str(self.data), json.dumps(arg)],
            cwd=ROOT,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        try:
            proc.wait(after)
        except subprocess.TimeoutExpired:
            kill_group_and_check_it_landed(proc.pid, proc)
        acknowledged = "acknowledged" in proc.stdout.read()
        committed = read_current(self.data).get("ledger", 0) > before
        assert committed or not acknowledged or not expected, "an acknowledged batch is missing"
        if committed:
            self.ops += expected

    def _env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": self.api_url}

    # -- after every step -------------------------------------------------------------------
    @invariant()
    def count_the_steps(self):
        STEPS.append(self.next_day)

    @invariant()
    def live_statements_are_the_models(self):
        if not hasattr(self, "data"):
            return
        got, want = live_statements(self.data), self.expected()
        assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
        assert {i: t for i, t in got.items() if want[i] != t} == {}

    @invariant()
    def rows_are_exact_and_the_version_is_whole(self):
        if not hasattr(self, "data"):
            return
        assert_rows_exact(self.data)
        assert verify(self.data) == []


@pytest.mark.slow
def test_lifecycle_against_a_model(published, prefect_server):
    from prefect.settings import PREFECT_API_URL

    Lifecycle.source = published.data
    Lifecycle.api_url = PREFECT_API_URL.value()
    examples = int(os.environ.get("SHARDVEC_LIFECYCLE_EXAMPLES", "5"))
    Lifecycle.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    STEPS.clear()
    CHANGED.clear()
    Lifecycle.TestCase().runTest()
    print(f"{len(STEPS)} steps checked against the model, {len(CHANGED)} of them changing a setting")
    assert len(STEPS) >= examples * 3  # the net is only as good as the sequences it walks


def test_the_scripts_tests_start_keep_their_prefect_home_in_the_sessions_folder():
    """What a script's ENVIRONMENT line sets, started without the Prefect home of this process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    del env["PREFECT_HOME"]
    out = subprocess.run(
        [sys.executable, "-c", ENVIRONMENT + "import os; print(os.environ['PREFECT_HOME'])"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    home = Path(out.stdout.strip())
    assert home.parent == Path(os.environ["SHARDVEC_TEST_TMP"]) and home.is_dir()
    assert home != Path(os.environ["PREFECT_HOME"])


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
