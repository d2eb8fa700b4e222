"""Resumable multipart uploads: a file cut off by a crash or a kill resumes from its finished parts.

:class:`S3Uploader` sends files of at least ``multipart_threshold_mb`` through
:class:`MultipartUploader`; it reads the destination keys ``checksum``,
``multipart_chunksize_mb`` (the part size; larger when a file would need more than
10,000 parts) and ``max_concurrency`` (parts in flight per uploader).

* **State.** One small JSON file per upload (:mod:`common.multipart_state`), in
  ``<state-dir>/uploads/``, rewritten atomically after every part: a SIGKILL loses at
  most the parts in flight.
* **Runs at once.** Runs sharing the state directory coordinate per key: an upload
  (resume, parts, completion, or aborting superseded versions) holds the key's file
  lock (:meth:`StateStore.key_lock`). A second run that wants the same key waits for
  the first (its stop event ends the wait); when it gets the lock it asks S3 once
  (a HEAD) whether the other run landed this very file meanwhile, and if so sends
  nothing. One process coordinates its own threads with a lock per key too.
* **Parts.** Each part is streamed from the file while it is sent (no part is held in
  memory); at most ``max_concurrency`` parts are in flight per uploader, all jobs
  together, on its own thread pool. The job's thread reads the file once, in order,
  for the SHA-256 of each part and of the whole file.
* **Resume.** A part counts as done only if ``ListParts`` shows it with the same ETag
  and size, and the local bytes still hash to the recorded SHA-256; only the others
  are sent. The whole file is re-read in order either way, and its SHA-256 must be the
  one the caller gave before the upload is completed.
* **Stop.** When the stop event is set (SIGINT, SIGTERM, the monitor deadline), no new
  part is started, the parts in flight finish, the upload is aborted (no orphaned parts
  are left in the bucket) and its state deleted, and :class:`UploadStopped` is raised:
  nothing lands under the key. Only a crash or a kill, which cannot clean up, leaves
  an upload to resume.
* **Withdrawn.** ``commit`` (see :meth:`MultipartUploader.upload`) is asked once every
  part is sent; when it says no, the upload is aborted and its state deleted, and
  :class:`UploadWithdrawn` is raised: nothing lands under the key.
* **Failure.** A transient failure that outlived its retries keeps the state (the next
  run resumes). A permanent one (the local file changed, the upload vanished, access
  denied) aborts the upload and deletes the state.
* **Stale uploads.** :meth:`MultipartUploader.sweep` aborts the uploads whose state
  file is older than a day, and only those: uploads this project started and knows.
  It never lists a bucket's uploads to abort unknown ones, which may belong to another
  tool. An upload whose state was lost (a deleted state directory) is left to the
  bucket's lifecycle rule (``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Self

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from common.exceptions import (
    TransientUploadError,
    UploadError,
    UploadWithdrawn,
    is_transient,
)
from common.multipart_state import (
    STALE_AFTER_S,
    PartRecord,
    StateStore,
    UploadState,
    part_size_for,
)
from common.retry import RetryPolicy

__all__ = ["FilePart", "LocalFileChanged", "MultipartUploader", "UploadStopped", "UploadWithdrawn", "upload_error"]

log = structlog.get_logger(__name__)
#: Bytes read (and hashed) at a time.
BLOCK = 1024 * 1024


class UploadStopped(UploadError):
    """The run was stopped during a multipart upload, which was aborted. Fields: ``key``, ``parts_done``."""


class LocalFileChanged(UploadError):
    """The local file is not the one described by its size and SHA-256; the upload was aborted."""


def upload_error(message: str, exc: BaseException, key: str) -> UploadError:
    """A library error as our UploadError, transient when retrying may help."""
    if isinstance(exc, UploadError):
        return exc
    detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    cls = TransientUploadError if is_transient(exc) else UploadError
    return cls(f"{message}: {detail}", key=key)


def _code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else ""


class FilePart:
    """``length`` bytes of a file from ``offset``, as a seekable stream: an UploadPart body read
    from disk while it is sent, never held whole in memory."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close() / the with block
        self._offset, self._length, self._pos = offset, length, 0
        self._fh.seek(offset)

    def __len__(self) -> int:
        return self._length

    def read(self, amount: int | None = -1) -> bytes:
        left = self._length - self._pos
        data = self._fh.read(left if amount is None or amount < 0 else min(amount, left))
        self._pos += len(data)
        return data

    def seek(self, where: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + where))
        self._fh.seek(self._offset + self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultipartUploader:
    """Multipart uploads of one destination client: a shared part pool and slots."""

    def __init__(self, client: Any, store: StateStore, checksum: str, chunksize: int, max_concurrency: int) -> None:
        self.client = client
        self.store = store
        self.checksum = checksum
        self.chunksize = chunksize
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="s3-part")
        self.slots = threading.BoundedSemaphore(max_concurrency)
        """One permit per part in flight, across all jobs (parts stream from disk: none is held in memory)."""
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    # ------------------------------------------------------------------ one upload

    def upload(self, bucket: str, key: str, path: Path, size: int, sha256: str, retry: RetryPolicy,
               stop: threading.Event | None, extra: dict[str, Any],
               part_sha256: Sequence[str] | None = None,
               commit: Callable[[], bool] | None = None) -> dict[str, Any] | None:
        """Upload ``path`` (``size`` bytes, ``sha256``) to ``key`` in parts, resuming an earlier attempt.

        Returns None, or the HEAD of the object when another run that shares the state
        directory, waited for, landed this very file under ``key`` meanwhile (nothing sent).

        ``part_sha256`` (hex, one per part of :func:`part_size_for`, streamed by the FileSink
        while the file was fetched) spares the pass that reads and hashes the file before
        its parts go: with ``checksum: sha256`` each is sent as its part's checksum, so the
        store itself refuses a part whose bytes changed on disk since. Otherwise (another
        checksum, or digests for another part size) the parts are hashed here.

        ``commit``: asked once every part is sent, before the upload is completed; False
        aborts it (:class:`UploadWithdrawn`). The engine sends a large file's parts while the
        file is still being validated and completes the upload only if it is valid.

        Raises :class:`UploadStopped` or :class:`UploadWithdrawn` (aborted), :class:`LocalFileChanged` or another
        :class:`UploadError` (transient ones keep the upload resumable).
        """
        part_size = part_size_for(size, self.chunksize)
        with self._key_lock(bucket, key), self._claimed(bucket, key, size, sha256, retry, stop) as landed:
            if landed is not None:
                log.info("multipart_landed_by_other_run", key=key)
                return landed
            if path.stat().st_size != size:
                raise LocalFileChanged(f"{path.name} is {path.stat().st_size} bytes, not {size}", key=key)
            self._abort_superseded(bucket, key, StateStore.name(bucket, key, sha256, size, part_size), retry)
            state = self._resume(bucket, key, sha256, size, part_size, retry)
            if state is None:
                state = self._create(bucket, key, sha256, size, part_size, retry, extra)
            streamed = (tuple(part_sha256) if part_sha256 is not None and self.checksum == "sha256"
                        and len(part_sha256) == state.part_count else None)
            try:
                self._send_parts(state, path, retry, stop, streamed)
                if commit is not None and not commit():
                    raise UploadWithdrawn.of(key)
                self._complete(state, retry)
            except UploadWithdrawn:
                log.info("multipart_withdrawn", key=key, upload_id=state.upload_id, parts=state.part_count)
                self._abort(state, retry, reason="withdrawn")
                raise
            except UploadStopped:
                log.info("multipart_stopped", key=key, upload_id=state.upload_id, parts_done=len(state.parts),
                         parts=state.part_count)
                self._abort(state, retry, reason="run stopped")
                raise
            except UploadError as exc:
                if not is_transient(exc):
                    self._abort(state, retry, reason=str(exc)[:200])
                else:
                    log.warning("multipart_left_resumable", key=key, parts_done=len(state.parts),
                                parts=state.part_count, error=str(exc)[:200])
                raise
            self.store.delete(state)
        return None

    def _create(self, bucket: str, key: str, sha256: str, size: int, part_size: int, retry: RetryPolicy,
                extra: dict[str, Any]) -> UploadState:
        args: dict[str, Any] = {"Metadata": {"sha256": sha256}, **extra}
        if self.checksum in ("sha256", "crc32"):
            args["ChecksumAlgorithm"] = self.checksum.upper()
        try:
            response = retry.call(self.client.create_multipart_upload, Bucket=bucket, Key=key, **args,
                                  what=f"create upload {key}")
        except (ClientError, BotoCoreError) as exc:
            raise upload_error(f"cannot start the upload of {key}", exc, key) from exc
        state = UploadState(bucket, key, sha256, size, part_size, response["UploadId"], time.time())
        self.store.save(state)
        log.info("multipart_created", key=key, upload_id=state.upload_id, parts=state.part_count, part_size=part_size)
        return state

    def _resume(self, bucket: str, key: str, sha256: str, size: int, part_size: int,
                retry: RetryPolicy) -> UploadState | None:
        """The saved upload with only the parts S3 confirms, or None to start afresh."""
        state = self.store.load(bucket, key, sha256, size, part_size)
        if state is None:
            return None
        if time.time() - state.created_at > STALE_AFTER_S:
            self._abort(state, retry, reason="stale")
            return None
        try:
            listed = retry.call(self._list_parts, state, what=f"list parts {key}")
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "NoSuchUpload":
                raise upload_error(f"cannot list the parts of {key}", exc, key) from exc
            log.warning("multipart_upload_vanished", key=key, upload_id=state.upload_id)
            self.store.delete(state)
            return None
        state.parts = {n: p for n, p in state.parts.items() if listed.get(n) == (p.etag.strip('"'), p.size)}
        self.store.save(state)
        log.info("multipart_resumed", key=key, upload_id=state.upload_id, parts_done=len(state.parts),
                 parts=state.part_count)
        return state

    def _list_parts(self, state: UploadState) -> dict[int, tuple[str, int]]:
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=state.bucket, Key=state.key, UploadId=state.upload_id)
        return {p["PartNumber"]: (p["ETag"].strip('"'), p["Size"]) for page in pages for p in page.get("Parts", [])}

    def _send_parts(self, state: UploadState, path: Path, retry: RetryPolicy, stop: threading.Event | None,
                    streamed: tuple[str, ...] | None = None) -> None:
        """Send each part not already done, in order; its SHA-256 from ``streamed`` or, without
        it, from reading the file here (hashing it whole too, to catch a file that changed)."""
        whole = hashlib.sha256()
        done = dict(state.parts)
        lock = threading.Lock()
        errors: list[BaseException] = []
        pending: list[Future[None]] = []
        grew = False
        with contextlib.nullcontext() if streamed else open(path, "rb") as fh:
            try:
                for number in range(1, state.part_count + 1):
                    if errors or (stop is not None and stop.is_set()):
                        break
                    if streamed:
                        part_sha = streamed[number - 1]
                        checksum: str | None = base64.b64encode(bytes.fromhex(part_sha)).decode()
                    else:
                        part_sha, checksum = self._hash_part(fh, state.part_length(number), whole, path, state.key)
                    record = done.get(number)
                    if record is not None and record.sha256 == part_sha:
                        continue
                    self.slots.acquire()
                    try:
                        pending.append(self.pool.submit(contextvars.copy_context().run, self._part_task, state,
                                                        number, path, part_sha, checksum, retry, lock, errors))
                    except BaseException:
                        self.slots.release()
                        raise
                if fh is not None:  # read from the file, not streamed: did it grow meanwhile?
                    grew = fh.read(1) != b""
            finally:
                wait(pending)
        if errors:
            first = errors[0]
            if stop is not None and stop.is_set() and is_transient(first):
                raise UploadStopped(f"stopped: upload of {state.key} aborted", key=state.key,
                                    parts_done=len(state.parts))
            raise upload_error(f"upload of {state.key} failed", first, state.key) from first
        if len(state.parts) < state.part_count:
            raise UploadStopped(f"stopped: upload of {state.key} aborted ({len(state.parts)} of "
                                f"{state.part_count} parts)", key=state.key, parts_done=len(state.parts))
        if not streamed and (grew or whole.hexdigest() != state.sha256):
            raise LocalFileChanged(f"{path.name} changed: its SHA-256 is no longer {state.sha256[:12]}...",
                                   key=state.key)

    def _hash_part(self, fh: Any, length: int, whole: Any, path: Path, key: str) -> tuple[str, str | None]:
        """The next ``length`` bytes' SHA-256 (hex) and transport checksum, read in blocks into ``whole`` too."""
        part = hashlib.sha256()
        crc = 0
        remaining = length
        while remaining:
            block = fh.read(min(BLOCK, remaining))
            if not block:
                raise LocalFileChanged(f"{path.name} became shorter while uploading", key=key)
            whole.update(block)
            part.update(block)
            if self.checksum == "crc32":
                crc = zlib.crc32(block, crc)
            remaining -= len(block)
        checksum = {"sha256": base64.b64encode(part.digest()).decode(),
                    "crc32": base64.b64encode(crc.to_bytes(4, "big")).decode()}.get(self.checksum)
        return part.hexdigest(), checksum

    def _part_task(self, state: UploadState, number: int, path: Path, part_sha: str, checksum: str | None,
                   retry: RetryPolicy, lock: threading.Lock, errors: list[BaseException]) -> None:
        try:
            record = retry.call(self._put_part, state, number, path, part_sha, checksum,
                                what=f"part {number} of {state.key}")
            with lock:
                state.parts[number] = record
                self.store.save(state)
            log.debug("multipart_part_uploaded", key=state.key, part=number, bytes=record.size)
        except BaseException as exc:  # noqa: BLE001 - handed to the job thread, which raises it
            with lock:
                errors.append(exc)
        finally:
            self.slots.release()

    def _put_part(self, state: UploadState, number: int, path: Path, part_sha: str,
                  checksum: str | None) -> PartRecord:
        """One UploadPart, its body streamed from the file; with ``checksum`` S3 rejects other bytes."""
        args = {f"Checksum{self.checksum.upper()}": checksum} if checksum else {}
        length = state.part_length(number)
        with FilePart(path, (number - 1) * state.part_size, length) as body:
            response = self.client.upload_part(Bucket=state.bucket, Key=state.key, UploadId=state.upload_id,
                                               PartNumber=number, Body=body, ContentLength=length, **args)
        return PartRecord(response["ETag"], length, part_sha, checksum)

    def _complete(self, state: UploadState, retry: RetryPolicy) -> None:
        field_name = {"sha256": "ChecksumSHA256", "crc32": "ChecksumCRC32"}.get(self.checksum)
        parts = []
        for number, part in sorted(state.parts.items()):
            entry: dict[str, Any] = {"PartNumber": number, "ETag": part.etag}
            if field_name and part.checksum:
                entry[field_name] = part.checksum
            parts.append(entry)
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            if tries > 1 and self._landed(state):  # the failed try completed it, its answer lost
                return
            self.client.complete_multipart_upload(Bucket=state.bucket, Key=state.key, UploadId=state.upload_id,
                                                  MultipartUpload={"Parts": parts})

        try:
            retry.call(attempt, what=f"complete {state.key}")
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "NoSuchUpload" or not retry.call(self._landed, state, what=f"head {state.key}"):
                raise upload_error(f"cannot complete the upload of {state.key}", exc, state.key) from exc
        log.info("multipart_completed", key=state.key, upload_id=state.upload_id, parts=state.part_count)

    def _landed(self, state: UploadState) -> bool:
        """Whether the object is there with this upload's size and sha256."""
        return self._holds(state.bucket, state.key, state.size, state.sha256) is not None

    def _holds(self, bucket: str, key: str, size: int, sha256: str) -> dict[str, Any] | None:
        """The HEAD of ``key`` if it holds an object of this size and sha256, else None."""
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        same = head.get("ContentLength") == size and head.get("Metadata", {}).get("sha256") == sha256
        return head if same else None

    # ------------------------------------------------------------------ housekeeping

    def _abort(self, state: UploadState, retry: RetryPolicy, reason: str) -> None:
        """Abort the upload (best effort) and forget its state."""
        self._abort_id(state.bucket, state.key, state.upload_id, retry, reason)
        self.store.delete(state)

    def _abort_id(self, bucket: str, key: str, upload_id: str, retry: RetryPolicy, reason: str) -> None:
        try:
            retry.call(self.client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id,
                       what=f"abort upload {key}")
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "NoSuchUpload":
                log.warning("multipart_abort_failed", key=key, upload_id=upload_id,
                            error=_code(exc) or type(exc).__name__)
                return
        log.info("multipart_aborted", key=key, upload_id=upload_id, reason=reason)

    def _abort_superseded(self, bucket: str, key: str, keep: str, retry: RetryPolicy) -> None:
        """Abort saved uploads to ``key`` of another file version: the key will hold this one."""
        for state in self.store.states():
            if state.bucket == bucket and state.key == key and self.store.name_of(state) != keep:
                self._abort(state, retry, reason="superseded by another version of the file")

    def sweep(self, bucket: str, retry: RetryPolicy) -> int:
        """Abort the uploads in ``bucket`` whose state file is older than a day; returns how many.

        Only uploads we have a state of are touched (S3's own list of uploads is never
        read: what is not ours may be another tool's upload in progress); a key another
        process is uploading now (its lock is held) is left to it.
        """
        now, aborted = time.time(), 0
        for state in self.store.states():
            if state.bucket != bucket or now - state.created_at <= STALE_AFTER_S:
                continue
            lock = self.store.key_lock(state.bucket, state.key)
            if lock is not None and not lock.try_acquire():
                continue
            try:
                self._abort(state, retry, reason="stale")
                aborted += 1
            finally:
                if lock is not None:
                    lock.release(unlink=True)
        return aborted

    @contextlib.contextmanager
    def _claimed(self, bucket: str, key: str, size: int, sha256: str, retry: RetryPolicy,
                 stop: threading.Event | None) -> Iterator[dict[str, Any] | None]:
        """Hold ``key``'s uploads against other processes sharing the state directory.

        Yields None, or (after waiting for another process that held them) the HEAD of the
        object that process landed if it is this very file. Raises :class:`UploadStopped`
        when ``stop`` is set while waiting.
        """
        lock = self.store.key_lock(bucket, key)
        if lock is None:
            yield None
            return
        waited = not lock.try_acquire()
        if waited:
            log.info("multipart_waiting_for_other_run", key=key)
            if not lock.acquire(stop):
                raise UploadStopped(f"stopped: waiting for another run's upload of {key}", key=key, parts_done=0)
        try:
            yield retry.call(self._holds, bucket, key, size, sha256, what=f"head {key}") if waited else None
        finally:
            lock.release(unlink=True)

    @contextlib.contextmanager
    def _key_lock(self, bucket: str, key: str) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault((bucket, key), threading.Lock())
        with lock:
            yield

    def close(self) -> None:
        self.pool.shutdown(wait=True)
