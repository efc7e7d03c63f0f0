"""The object-store seam: keys under one URL prefix (s3://bucket/prefix; gs:// and az:// through
the same fsspec calls), read and written whole, never listed.

`ObjectStore` is all the rest of shardvec knows of a bucket: `get` a small object, `exists`,
`put_if_absent` (a conditional write, S3's `If-None-Match: *`: the commit point of a push), and
`upload` / `download` of files, streamed in bounded chunks and checked by SHA-256 (kept in each
object's metadata, so an upload of what is already there is skipped). `probe` refuses, at start,
a store that does not honour the condition: commits on it would overwrite each other.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from shardvec.errors import ShardvecError
from shardvec.tasks.storage.atomic import atomic_path

CHUNK = 8 << 20  # bytes per streamed read and per multipart part (S3's minimum part is 5 MiB)
_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "memory://")


class ObjectStoreError(OSError, ShardvecError):
    """The object store cannot be used as asked; the message says what to do."""


class DamagedObjectError(ObjectStoreError, ValueError):
    """An object's bytes are not the ones its SHA-256 names."""


def is_url(where: object) -> bool:
    """True if `where` names an object store (s3://...), not a local data directory."""
    return isinstance(where, str) and where.startswith(_SCHEMES)


class ObjectStore:
    """The objects under `url`; `options` go to the fsspec filesystem (for s3fs: endpoint_url, key,
    secret, client_kwargs...). Without them, s3fs takes the AWS_* environment variables, and an
    `AWS_ENDPOINT_URL_S3` (or `SHARDVEC_S3_ENDPOINT_URL`) names an S3-compatible endpoint."""

    def __init__(self, url: str, **options):
        import fsspec

        if not is_url(url):
            raise ObjectStoreError(f"{url!r} is not an object store URL; give one like s3://bucket/prefix.")
        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        if protocol in ("s3", "s3a"):
            endpoint = os.environ.get("SHARDVEC_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            if endpoint and "endpoint_url" not in options:
                options["endpoint_url"] = endpoint
        # skip_instance_cache: one client per store (fsspec would share one across threads' users)
        self.fs, root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **options)
        self.root = root.rstrip("/")
        self._s3 = protocol in ("s3", "s3a")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    # --- small objects --------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.fs.info(self.path(key))
            return True
        except FileNotFoundError:
            return False

    def get(self, key: str) -> bytes | None:
        """A small object's bytes (a log entry), or None when there is none."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if nothing is there: True if this call wrote it, False if
        the key existed (another writer won). Concurrent conditional writes S3 answers with a 409
        conflict are retried until one of them is decided."""
        for attempt in range(20):
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if "ConditionalRequestConflict" not in str(exc) and getattr(exc, "errno", None) != 16:
                    raise
                time.sleep(0.05 * (attempt + 1))  # 409: another conditional write to the key in flight
        raise ObjectStoreError(f"Writes to {self.url}/{key} kept conflicting; try again.")

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass

    def probe(self) -> None:
        """Refuse a store that does not honour conditional writes: put one key twice, the second
        must fail."""
        key = f"_probe/{secrets.token_hex(8)}"
        try:
            first = self.put_if_absent(key, b"1")
            second = self.put_if_absent(key, b"2")
        finally:
            self.delete(key)
        if not first or second:
            raise ObjectStoreError(
                f"{self.url} does not honour conditional writes (If-None-Match: *): a second create of "
                "one key succeeded, so two pushes could overwrite each other's commit; use a store that "
                "supports them (AWS S3, or an S3-compatible server that implements them)."
            )

    # --- files ------------------------------------------------------------------------------
    def sha256(self, key: str) -> str | None:
        """The SHA-256 an upload recorded in the object's metadata; None if there is no object."""
        try:
            meta = self.fs.metadata(self.path(key)) if self._s3 else self.fs.info(self.path(key))
        except FileNotFoundError:
            return None
        return (meta or {}).get("sha256")

    def upload(self, local: Path, key: str, sha256: str, skip_same: bool = True) -> bool:
        """Put the file `local` (whose SHA-256 is `sha256`) at `key`, streamed in CHUNK parts; False
        if the object there already has that SHA-256 (nothing sent; `skip_same=False`: the caller
        asked already)."""
        if skip_same and self.sha256(key) == sha256:
            return False
        extra = {"Metadata": {"sha256": sha256}} if self._s3 else {"metadata": {"sha256": sha256}}
        # chunksize bounds what s3fs reads at once: a file of 2 chunks or more goes up in parts
        self.fs.put_file(str(local), self.path(key), chunksize=CHUNK, max_concurrency=2, **extra)
        return True

    def download(self, key: str, local: Path, sha256: str) -> None:
        """Stream `key` into `local` (temporary file, then renamed), refusing bytes whose SHA-256 is
        not `sha256`: the old file, if any, stays."""
        h = hashlib.sha256()
        with atomic_path(Path(local)) as tmp:
            with self.fs.open(self.path(key), "rb", block_size=CHUNK) as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != sha256:
                raise DamagedObjectError(
                    f"{self.url}/{key} is damaged (its SHA-256 is {h.hexdigest()[:12]}..., the log entry names "
                    f"{sha256[:12]}...); push the data directory again with `shardvec push --to {self.url}`."
                )
