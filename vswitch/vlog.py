"""Logging in Open vSwitch's shape, or as JSON lines.

Operators grep OVS logs by their ``time|seq|module|LEVEL|message`` layout, so
the text format keeps it; ``--log-format=json`` gives one JSON object per line
for log shippers.  Extra context goes in ``extra={"fields": {...}}`` and is
rendered as ``key=value`` pairs (text) or merged into the object (JSON).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time

_seq = itertools.count(1)


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % record.msecs


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        module = record.name.rsplit(".", 1)[-1]
        msg = record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            msg += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        line = "%s|%05d|%s|%s|%s" % (_timestamp(record), next(_seq), module,
                                     record.levelname.replace("WARNING", "WARN"),
                                     msg)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {"time": _timestamp(record), "seq": next(_seq),
               "module": record.name, "level": record.levelname,
               "msg": record.getMessage()}
        obj.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def setup(level: str = "info", fmt: str = "text", path: str | None = None) -> None:
    """Configure the root logger once for the process."""
    handler = (logging.FileHandler(path) if path
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
