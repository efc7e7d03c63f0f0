"""The data directory on an object store, for readers (issue #36's first slice): `shardvec push`
to moto's real S3 server (in this process, on a free port, no internet) and `shardvec.open("s3://")`
reading it back through a local cache, equal to the local store; conditional writes, damaged
objects and a store that ignores the condition."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

import shardvec
from shardvec.tasks.storage import DamagedObjectError, ObjectStore, ObjectStoreError
from shardvec.tasks.storage import latest, log_key, push
from tests.corpora import SENTENCES
from tests.processes import free_port
from tests.runs import shardvec_cli


class S3Server(ThreadedMotoServer):
    """moto's S3 server. moto checks `If-None-Match: *` and then stores the object in two steps, so
    two requests its threads serve at once can both pass the check (S3 decides atomically): here
    requests are served one at a time, as one S3 key's conditional writes are. `honour=False`
    drops the header before moto sees it: a store that ignores the condition."""

    def __init__(self, honour: bool = True):
        super().__init__(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.honour = honour

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        moto = DomainDispatcherApplication(create_backend_app)
        one_at_a_time = threading.Lock()

        def app(environ, start_response):
            if not self.honour:
                environ.pop("HTTP_IF_NONE_MATCH", None)
            with one_at_a_time:
                return list(moto(environ, start_response))

        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"


def _serve(monkeypatch, honour: bool = True):
    server = S3Server(honour)
    server.start()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("SHARDVEC_S3_ENDPOINT_URL", server.url),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(Bucket="shelf")
    return server


@pytest.fixture
def s3(monkeypatch):
    server = _serve(monkeypatch)
    yield server
    server.stop()


def _same_answers(local, remote) -> None:
    assert remote.version == local.version and len(remote) == len(local)
    words = [local._words.key(r) for r in (0, 5, 17)]
    for w in words:
        assert remote.neighbours(w, 5) == local.neighbours(w, 5)
        assert (remote.vector(w) == local.vector(w)).all()
    for text in ("bushfires in New South Wales", SENTENCES[3]):
        assert remote.similar(text, 5) == local.similar(text, 5)
        assert remote.similar(text, 5, exact=True) == local.similar(text, 5, exact=True)
    for sid in (local._statements.key(0), local._statements.key(len(local) - 1)):
        assert remote.row(sid) == local.row(sid)


def test_a_pushed_store_reads_back_through_s3_equal_to_the_local_one(s3, published_copy, tmp_path):
    data, url, cache = published_copy, "s3://shelf/deploy", tmp_path / "cache"
    first = shardvec.push(to=url, data=data)
    assert first["committed"] and first["seq"] == 1 and first["uploaded"] > 10 and first["skipped"] == 0
    remote = shardvec.open(url, cache=cache)
    assert remote.data == cache.resolve()
    _same_answers(shardvec.open(data), remote)

    again = shardvec.push(to=url, data=data)  # nothing new: nothing sent, no entry
    assert not again["committed"] and again["uploaded"] == 0 and again["seq"] == 1

    added = {"id": "objects/1", "text": SENTENCES[40]}
    shardvec.add([added], data)
    second = shardvec.push(to=url, data=data)
    assert second["committed"] and second["seq"] == 2
    assert second["uploaded"] <= 4  # the segment's files (and nothing of the version again)
    assert "objects/1" not in remote
    fetched = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and "versions" in p.parts}
    assert remote.refresh() and "objects/1" in remote
    assert {p: p.stat().st_mtime_ns for p in fetched} == fetched  # the version's files were not fetched again
    local = shardvec.open(data)
    _same_answers(local, remote)
    assert remote.similar(added["text"], 1)[0].key == "objects/1"
    assert not remote.refresh()

    # a second reader of the same cache finds everything there: nothing fetched
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and "versions" in p.parts}
    other = shardvec.open(url, cache=cache)
    assert other.version == local.version and "objects/1" in other
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and "versions" in p.parts} == before

    entry = json.loads(ObjectStore(url).get(log_key(2)))
    assert entry["current"]["version"] == local.version and entry["written_by"] and entry["written_at"]


def test_the_push_verb_prints_what_the_function_returns(s3, published_copy, tmp_path):
    first = shardvec_cli("push", "--to", "s3://shelf/cli", "--data", published_copy)
    fields = dict(part.split("=", 1) for part in first.stdout.split())
    assert first.returncode == 0 and fields["seq"] == "1" and fields["committed"] == "True"
    again = shardvec.push(to="s3://shelf/cli", data=published_copy)
    assert set(again) == set(fields) and again == {
        "seq": 1,
        "version": fields["version"],
        "uploaded": 0,
        "skipped": int(fields["uploaded"]),
        "committed": False,
    }
    wrong = shardvec_cli("push", "--to", tmp_path / "elsewhere", "--data", published_copy)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: --to ") and "s3://bucket/prefix" in wrong.stderr


def test_readers_of_one_host_share_one_cache_and_fetch_once(s3, published_copy, tmp_path):
    url, cache = "s3://shelf/shared", tmp_path / "cache"
    push(published_copy, url)
    with ThreadPoolExecutor(4) as pool:  # the fetch lock is per open file description: threads contend like processes
        stores = list(pool.map(lambda _: shardvec.open(url, cache=cache), range(4)))
    assert len({s.version for s in stores}) == 1
    assert not list(cache.rglob("*.tmp"))


def test_sixteen_racing_conditional_writes_have_one_winner(s3):
    store = ObjectStore("s3://shelf/race")
    barrier = threading.Barrier(16)

    def put(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("log/000000000001.json", f"writer {i}".encode())

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(put, range(16)))
    assert won.count(True) == 1
    assert store.get("log/000000000001.json") == f"writer {won.index(True)}".encode()


def test_racing_pushes_commit_one_entry_each_in_sequence(s3, published_copy, tmp_path):
    url = "s3://shelf/pushes"
    store = ObjectStore(url)
    for seq in range(1, 4):  # entries others wrote before
        assert store.put_if_absent(log_key(seq), json.dumps({"current": {}}).encode())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: push(published_copy, url), range(4)))
    committed = sorted(r["seq"] for r in results if r["committed"])
    assert committed == [4]  # the others found their state committed already
    assert latest(store) == committed[-1]


def test_a_file_of_several_parts_goes_up_and_comes_back_whole(s3, tmp_path):
    """Above 2 x CHUNK an upload is multipart (s3fs reads one part at a time), and its SHA-256
    rides in the object's metadata through it; a download streams CHUNK at a time."""
    import hashlib
    import os

    CHUNK = 8 << 20  # tasks/storage/objects.py's part size
    big = tmp_path / "big.npy"
    with open(big, "wb") as f:
        for _ in range(5):
            f.write(os.urandom(CHUNK // 2 + 12345))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    store = ObjectStore("s3://shelf/big")
    assert store.upload(big, "versions/v/big.npy", sha) and store.sha256("versions/v/big.npy") == sha
    assert store.fs.info(store.path("versions/v/big.npy"))["ETag"].strip('"').endswith("-3")  # 3 parts
    assert not store.upload(big, "versions/v/big.npy", sha)  # there already: nothing sent
    store.download("versions/v/big.npy", tmp_path / "back" / "big.npy", sha)
    assert (tmp_path / "back" / "big.npy").read_bytes() == big.read_bytes()


def test_a_damaged_object_is_refused_by_its_sha256(s3, published_copy, tmp_path):
    url = "s3://shelf/damaged"
    push(published_copy, url)
    entry = json.loads(ObjectStore(url).get(log_key(1)))
    rel = next(r for r in entry["files"] if r.endswith(".npy"))
    store = ObjectStore(url)
    store.fs.pipe_file(store.path(entry["files"][rel]["key"]), b"not the bytes pushed")
    with pytest.raises(DamagedObjectError, match=r"is damaged \(its SHA-256 is .* push the data directory again"):
        shardvec.open(url, cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / rel).exists() and not (tmp_path / "cache" / "CURRENT").exists()


def test_a_damaged_local_file_is_never_pushed(s3, published_copy):
    version = shardvec.open(published_copy).version
    shard = next((published_copy / "versions" / version / "spaces" / "statements").glob("*.npy"))
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # the same size, other bytes
    shard.write_bytes(bytes(raw))
    with pytest.raises(ObjectStoreError, match=r"does not match the SHA-256 its manifest names; run `shardvec verify"):
        shardvec.push(to="s3://shelf/rot", data=published_copy)
    assert not ObjectStore("s3://shelf/rot").exists(log_key(1))


def test_a_store_that_ignores_the_condition_is_refused_at_start(monkeypatch, published_copy):
    server = _serve(monkeypatch, honour=False)
    try:
        with pytest.raises(ObjectStoreError, match="does not honour conditional writes"):
            shardvec.push(to="s3://shelf/loose", data=published_copy)
        assert not ObjectStore("s3://shelf/loose").exists(log_key(1))
    finally:
        server.stop()


def test_reading_a_prefix_nothing_was_pushed_to_says_to_push(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing is pushed to s3://shelf/empty yet; run `shardvec push"):
        shardvec.open("s3://shelf/empty", cache=tmp_path / "cache")
