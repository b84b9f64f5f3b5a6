import uuid

import pytest

from vswitch.ovsdb.db import Database
from vswitch.ovsdb.schema import DbSchema, load_schema

VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

# A small schema exercising every feature the engine must enforce.
TEST_SCHEMA = {
    "name": "T", "version": "1.0.0",
    "tables": {
        "Root": {"isRoot": True, "maxRows": 3, "indexes": [["name"]], "columns": {
            "name": {"type": "string"},
            "n": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 100}}},
            "r": {"type": "real"},
            "b": {"type": "boolean"},
            "color": {"type": {"key": {"type": "string", "enum": ["set", ["red", "green"]]},
                               "min": 0, "max": 1}},
            "opt": {"type": {"key": "integer", "min": 0, "max": 1}},
            "short": {"type": {"key": {"type": "string", "maxLength": 3}, "min": 0, "max": 1}},
            "ints": {"type": {"key": "integer", "min": 0, "max": 3}},
            "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
            "kids": {"type": {"key": {"type": "uuid", "refTable": "Kid"}, "min": 0, "max": "unlimited"}},
            "weak": {"type": {"key": {"type": "uuid", "refTable": "Other", "refType": "weak"},
                              "min": 0, "max": "unlimited"}},
            "wmap": {"type": {"key": "string", "value": {"type": "uuid", "refTable": "Other",
                                                          "refType": "weak"},
                              "min": 0, "max": "unlimited"}},
            "fixed": {"type": {"key": "integer", "min": 0, "max": 1}, "mutable": False},
        }},
        "Kid": {"columns": {
            "name": {"type": "string"},
            "toy": {"type": {"key": {"type": "uuid", "refTable": "Toy"}, "min": 0, "max": 1}},
        }},
        "Toy": {"columns": {"name": {"type": "string"}}},
        "WeakHolder": {"isRoot": True, "columns": {
            "w": {"type": {"key": {"type": "uuid", "refTable": "Other", "refType": "weak"},
                           "min": 1, "max": 2}}}},
        "Other": {"isRoot": True, "columns": {"name": {"type": "string"}}},
    },
}


@pytest.fixture
def tdb():
    return Database(DbSchema.from_json(TEST_SCHEMA))


@pytest.fixture(scope="session")
def vswitch_schema():
    return load_schema(VSWITCH_SCHEMA)


@pytest.fixture
def vdb(vswitch_schema):
    return Database(vswitch_schema)


def U(s):
    return ["uuid", str(s)]


def uid(res):
    return uuid.UUID(res["uuid"][1])
