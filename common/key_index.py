"""What the destination already holds, learned from one listing per folder instead of a HEAD per file.

Before it puts a file, the uploader must know whether an identical object is already at
the key (``skipped_same``). Asking with a HEAD per file costs a request as large as the
upload itself on small files; instead, the first time a run puts a key under a "folder"
(the key up to its last ``/``), :class:`KeyIndex` lists that folder once (ListObjectsV2 with
``Delimiter="/"``, 1,000 keys a page) and remembers each object's size and ETag. What the
run itself writes is added as it lands. rclone does the same (one listing, then PUTs).

A lookup answers one of:

* an :class:`Existing` object (size and ETag; for a single-part upload the ETag is the
  content's MD5, which the uploader compares with the MD5 it streamed);
* :data:`ABSENT`: the folder was listed in full and the key was not in it;
* :data:`UNKNOWN`: the folder could not be listed (no ``s3:ListBucket`` permission, an
  error after retries) or holds more than ``max_pages`` pages of keys: the uploader asks
  with a HEAD, as it would without an index.

The index lives as long as the uploader (one run). An object written or deleted by
someone else during the run is not seen; at worst an identical object is uploaded again
or a deleted one is not restored until the next run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from common.retry import RetryPolicy

__all__ = ["ABSENT", "UNKNOWN", "Existing", "KeyIndex"]

log = structlog.get_logger(__name__)

#: Pages (of 1,000 keys) listed per folder at most; a larger folder is answered by HEADs.
MAX_PAGES = 20


@dataclass(frozen=True, slots=True)
class Existing:
    size: int
    etag: str
    """Without quotes."""


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ABSENT: Final = _Marker("ABSENT")
UNKNOWN: Final = _Marker("UNKNOWN")


class _Folder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listed = False
        self.complete = False
        self.objects: dict[str, Existing] = {}


class KeyIndex:
    """Objects of the folders a run writes into, listed on first use. Thread-safe."""

    def __init__(self, client: Any, max_pages: int = MAX_PAGES, page_size: int = 1000) -> None:
        self._client = client
        self._max_pages = max_pages
        self._page_size = page_size
        self._folders: dict[tuple[str, str], _Folder] = {}
        self._lock = threading.Lock()

    def lookup(self, bucket: str, key: str, retry: RetryPolicy) -> Existing | _Marker:
        folder = self._folder(bucket, key)
        with folder.lock:  # one listing per folder, whoever asks first; the others wait for it
            if not folder.listed:
                folder.listed = True
                self._list(bucket, _folder_of(key), folder, retry)
            found = folder.objects.get(key)
            if found is not None:
                return found
            return ABSENT if folder.complete else UNKNOWN

    def record(self, bucket: str, key: str, size: int, etag: str) -> None:
        """``key`` now holds an object of ``size`` bytes with ``etag`` (written by this run)."""
        folder = self._folder(bucket, key)
        with folder.lock:
            folder.objects[key] = Existing(size, etag.strip('"'))

    def discard(self, bucket: str, key: str) -> None:
        """``key`` holds nothing any more (this run deleted it)."""
        folder = self._folder(bucket, key)
        with folder.lock:
            folder.objects.pop(key, None)

    def forget(self, bucket: str, key: str) -> None:
        """What ``key`` holds is not known any more (an upload failed part-way)."""
        folder = self._folder(bucket, key)
        with folder.lock:
            folder.objects.pop(key, None)
            folder.complete = False

    def _folder(self, bucket: str, key: str) -> _Folder:
        ident = (bucket, _folder_of(key))
        with self._lock:
            folder = self._folders.get(ident)
            if folder is None:
                folder = self._folders[ident] = _Folder()
            return folder

    def _list(self, bucket: str, prefix: str, folder: _Folder, retry: RetryPolicy) -> None:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": self._page_size}
        try:
            for _ in range(self._max_pages):
                page = retry.call(self._client.list_objects_v2, what=f"list {prefix or '/'}", **args)
                for item in page.get("Contents", ()):
                    folder.objects[item["Key"]] = Existing(int(item["Size"]), str(item.get("ETag", "")).strip('"'))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    folder.complete = True
                    return
                args["ContinuationToken"] = token
            log.debug("key_index_folder_too_large", bucket=bucket, prefix=prefix, pages=self._max_pages)
        except (ClientError, BotoCoreError) as exc:
            # Not fatal: without a listing every key of the folder is asked about with a HEAD.
            log.debug("key_index_list_failed", bucket=bucket, prefix=prefix, error=type(exc).__name__)


def _folder_of(key: str) -> str:
    return key[: key.rfind("/") + 1]
