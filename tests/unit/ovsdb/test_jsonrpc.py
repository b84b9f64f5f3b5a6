"""JSON-RPC framing fed byte by byte, garbage and all, with a fake clock."""
import json

from hypothesis import given, settings, strategies as st

from vswitch.ovsdb.jsonrpc import (ConnectionClosed, JsonRpcConnection, Notification,
                                   ProtocolError, Request, Response)


def events(conn):
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def test_back_to_back_messages_split_anywhere():
    msgs = [{"id": 1, "method": "echo", "params": ["a}\"[{\\"]},
            {"id": None, "method": "cancel", "params": [1]},
            {"id": 7, "result": {"x": [1, 2]}, "error": None}]
    wire = b"".join(json.dumps(m).encode() for m in msgs) + b"  \n"
    for step in (1, 2, 3, 7, len(wire)):
        conn = JsonRpcConnection()
        evs = []
        for i in range(0, len(wire), step):
            conn.receive_bytes(wire[i:i + step], now=0.0)
            evs += events(conn)
        assert evs == [Request(1, "echo", ["a}\"[{\\"]), Notification("cancel", [1]),
                       Response(7, {"x": [1, 2]}, None)]


def test_utf8_split_inside_string():
    wire = json.dumps({"id": 1, "method": "echo", "params": ["héllo ☃"]}, ensure_ascii=False).encode()
    conn = JsonRpcConnection()
    for b in wire:
        conn.receive_bytes(bytes([b]), 0.0)
    assert events(conn) == [Request(1, "echo", ["héllo ☃"])]


def test_malformed_input_yields_errors_and_resyncs():
    conn = JsonRpcConnection()
    conn.receive_bytes(b'garbage}}] {"id": 1, "method": "echo", "params": [tru]}'
                       b'[1, 2] {"id": 2} {"id": 3, "method": 5, "params": []}'
                       b'{"id": 4, "method": "echo", "params": {}}'
                       b'{"id": 5, "method": "echo", "params": []}', 0.0)
    evs = events(conn)
    assert [type(e) for e in evs] == [ProtocolError, ProtocolError, ProtocolError, ProtocolError,
                                      ProtocolError, ProtocolError, Request]
    assert evs[4].id == 3 and evs[5].id == 4
    assert evs[-1] == Request(5, "echo", [])
    assert conn.state == JsonRpcConnection.OPEN


def test_invalid_utf8():
    conn = JsonRpcConnection()
    conn.receive_bytes(b'{"id": 1, "method": "echo", "params": ["\xff\xfe"]}', 0.0)
    assert isinstance(conn.next_event(), ProtocolError)


def test_output_encoding():
    conn = JsonRpcConnection()
    conn.send_result(1, {"a": 1})
    conn.send_error(2, {"error": "x"})
    conn.send_notification("update", ["m", {}])
    assert conn.send_request("echo", []) == 1
    assert conn.bytes_to_send() == (b'{"id":1,"result":{"a":1},"error":null}'
                                    b'{"id":2,"result":null,"error":{"error":"x"}}'
                                    b'{"id":null,"method":"update","params":["m",{}]}'
                                    b'{"id":1,"method":"echo","params":[]}')
    assert conn.bytes_to_send() == b""


def test_inactivity_probe_with_fake_clock():
    conn = JsonRpcConnection(now=100.0, probe_interval=5.0)
    assert conn.get_timer() == 105.0
    conn.handle_timer(104.0)
    assert conn.bytes_to_send() == b""
    conn.handle_timer(105.0)
    assert b'"method":"echo"' in conn.bytes_to_send()
    assert conn.state == JsonRpcConnection.PROBING and conn.get_timer() == 110.0
    conn.receive_bytes(b'{"id":1,"result":[],"error":null}', 106.0)
    assert conn.state == JsonRpcConnection.OPEN and conn.get_timer() == 111.0
    conn.handle_timer(111.0)
    conn.handle_timer(121.0)
    assert conn.state == JsonRpcConnection.CLOSED
    assert isinstance(events(conn)[-1], ConnectionClosed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_random_bytes_never_crash_and_resync(junk, step):
    conn = JsonRpcConnection()
    wire = junk + b' ]}"\n{"id": 99, "method": "echo", "params": []}'
    for i in range(0, len(wire), step):
        conn.receive_bytes(wire[i:i + step], 0.0)
    evs = events(conn)
    # whatever the junk, the connection is still open and the stream can
    # resynchronise (an unterminated string in the junk may swallow the tail)
    assert conn.state == JsonRpcConnection.OPEN
    assert all(isinstance(e, (Request, Notification, Response, ProtocolError)) for e in evs)


def test_megabytes_of_garbage_are_skipped_quickly():
    import time
    conn = JsonRpcConnection()
    t = time.perf_counter()
    conn.receive_bytes(b"x" * (8 << 20) + b'{"id":1,"method":"echo","params":[]}', 0.0)
    assert time.perf_counter() - t < 2.0
    evs = events(conn)
    assert isinstance(evs[0], ProtocolError) and evs[-1] == Request(1, "echo", [])
