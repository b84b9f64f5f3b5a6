"""Log lines keep OVS's layout, or are JSON objects."""

import json
import logging

from vswitch.vlog import JsonFormatter, TextFormatter


def record(msg, fields=None):
    r = logging.LogRecord("vswitch.bridge", logging.WARNING, __file__, 1, msg, (), None)
    if fields:
        r.fields = fields
    return r


def test_text_is_ovs_shaped():
    line = TextFormatter().format(record("added port", {"ofport": 1}))
    ts, seq, module, level, msg = line.split("|")
    assert ts.endswith("Z") and seq.isdigit() and module == "bridge"
    assert level == "WARN" and msg == "added port ofport=1"


def test_json_carries_fields():
    obj = json.loads(JsonFormatter().format(record("x", {"dp_port": 3})))
    assert obj["msg"] == "x" and obj["dp_port"] == 3 and obj["level"] == "WARNING"
