"""Durable storage: OVS's standalone append-only log format.

Each record is ``OVSDB JSON <length> <sha1>\\n<json>\\n`` (length and SHA-1
cover the JSON text and its newline).  The first record is the schema, every
later one a transaction ``{"Table": {"uuid": {col: value} | null}, "_date":
ms, "_comment": ...}``.  This is the file ``ovsdb-tool`` and ``ovsdb-server``
read, so a database we wrote can be inspected with ``ovsdb-tool show-log`` or
served by the real server, and vice versa.

Why this shape: a commit is one ``write`` + ``fsync`` before the reply is
sent, so an acknowledged transaction survives kill -9.  On open, records are
verified (header, length, SHA-1, JSON); the first bad one marks a torn tail,
and the file is truncated there -- a half-written record is dropped, never
misread.  When the log has grown well past the live data, it is compacted:
schema + one snapshot record written to a temporary file, fsync'd and renamed
over the old one (atomic on POSIX).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

log = logging.getLogger(__name__)

MAGIC = b"OVSDB JSON"


def compose_record(obj) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    header = b"%s %d %s\n" % (MAGIC, len(body), hashlib.sha1(body).hexdigest().encode())
    return header + body


def parse_records(data: bytes) -> tuple[list, int]:
    """Return (records, good_length): every valid record and the byte offset
    just past the last one."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos, pos + 200)
        if nl < 0:
            break
        parts = data[pos:nl].split(b" ")
        if len(parts) != 4 or b" ".join(parts[:2]) != MAGIC or not parts[2].isdigit():
            break
        length = int(parts[2])
        body = data[nl + 1:nl + 1 + length]
        if len(body) != length or hashlib.sha1(body).hexdigest().encode() != parts[3].lower():
            break
        try:
            obj = json.loads(body)
        except ValueError:
            break
        out.append(obj)
        pos = nl + 1 + length
    return out, pos


class LogStorage:
    """An open log file.  ``append_txn`` is durable when it returns."""

    def __init__(self, path: str, fsync: bool = True):
        self.path = path
        self.do_fsync = fsync
        self._f = None
        self.size = 0
        self.snapshot_size = 0
        self.n_records = 0

    # -- open/create
    @classmethod
    def create(cls, path: str, schema_json: dict, fsync: bool = True) -> "LogStorage":
        st = cls(path, fsync)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(compose_record(schema_json))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        st._fsync_dir()
        st._open_append()
        return st

    def read(self) -> tuple[dict, list]:
        """Read the log: (schema json, [transaction records]).  A torn or
        corrupt tail is truncated away.  Leaves the file open for append."""
        with open(self.path, "rb") as f:
            data = f.read()
        recs, good = parse_records(data)
        if not recs:
            raise ValueError(f"{self.path}: not an OVSDB standalone log (no valid schema record)")
        if good != len(data):
            log.warning("%s: dropping %d bytes of torn/corrupt tail at offset %d",
                        self.path, len(data) - good, good)
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                if self.do_fsync:
                    os.fsync(f.fileno())
        self._open_append()
        self.size = good
        self.snapshot_size = good
        self.n_records = len(recs) - 1
        return recs[0], recs[1:]

    def _open_append(self):
        self._f = open(self.path, "ab", buffering=0)
        self.size = self._f.seek(0, os.SEEK_END)

    def _fsync_dir(self):
        if not self.do_fsync:
            return
        d = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)

    # -- write
    def append_txn(self, rec: dict) -> None:
        if self._f is None:
            raise OSError("database log is closed")
        rec = dict(rec)
        rec["_date"] = int(time.time() * 1000)
        data = compose_record(rec)
        start = self.size
        try:
            self._f.write(data)
            if self.do_fsync:
                os.fsync(self._f.fileno())
        except OSError:
            # Never leave a partial record in the middle of the log.
            try:
                self._f.truncate(start)
            except OSError:
                pass
            raise
        self.size += len(data)
        self.n_records += 1

    def should_compact(self) -> bool:
        """ovsdb-server's rule of thumb: at least 100 records, at least 10 MB
        (1 MB here: our rows are small) and 4x the size after the last
        compaction."""
        return (self.n_records >= 100 and self.size >= (1 << 20)
                and self.size >= 4 * self.snapshot_size)

    def compact(self, schema_json: dict, snapshot: dict) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(compose_record(schema_json))
            rec = dict(snapshot)
            rec["_date"] = int(time.time() * 1000)
            rec["_comment"] = "compacting database online"
            f.write(compose_record(rec))
            f.flush()
            if self.do_fsync:
                os.fsync(f.fileno())
        self._f.close()
        os.replace(tmp, self.path)
        self._fsync_dir()
        self._open_append()
        self.snapshot_size = self.size
        self.n_records = 1

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
