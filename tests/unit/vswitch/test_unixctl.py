"""The control socket's wire protocol, fed bytes like ovs-appctl sends them."""

import json

import pytest

from vswitch.unixctl import UnixctlConnection, UnixctlError


def test_requests_split_across_reads_and_batched():
    conn = UnixctlConnection()
    wire = (json.dumps({"method": "version", "params": [], "id": 0})
            + json.dumps({"method": "dpctl/dump-flows", "params": ["--kernel"], "id": 1}))
    assert conn.receive_bytes(wire[:10].encode()) == []
    assert conn.receive_bytes(wire[10:].encode()) == [
        (0, "version", []), (1, "dpctl/dump-flows", ["--kernel"])]


def test_reply_bytes_are_ovs_unixctl_json_rpc():
    conn = UnixctlConnection()
    conn.reply(7, "text\n", None)
    conn.reply(8, None, "boom")
    data = conn.bytes_to_send()
    dec = json.JSONDecoder()
    first, end = dec.raw_decode(data.decode())
    second, _ = dec.raw_decode(data.decode()[end:])
    assert first == {"id": 7, "result": "text\n", "error": None}
    assert second == {"id": 8, "result": None, "error": "boom"}
    assert conn.bytes_to_send() == b""


@pytest.mark.parametrize("garbage", [b"]]]", b'{"method": 3, "id": 1}',
                                     b'{"method": "x", "params": [1], "id": 1}', b"[1,2]"])
def test_malformed_requests_raise(garbage):
    with pytest.raises(UnixctlError):
        UnixctlConnection().receive_bytes(garbage)
