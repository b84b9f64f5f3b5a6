"""The sans-IO channel fed bytes with a fake clock: negotiation, framing, errors, probes."""
import struct

from hypothesis import given, settings, strategies as st
from os_ken.ofproto import ofproto_v1_0 as of10, ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from tests.unit.openflow.helpers import hello_bytes, parse_reply, split_messages
from vswitch.openflow import codec
from vswitch.openflow.connection import (
    Connected, ConnectionClosed, ErrorSent, OpenFlowConnection, State,
    TRANSITIONS)


def events(conn):
    out = []
    while (e := conn.next_event()) is not None:
        out.append(e)
    return out


def connected(versions=(1, 4), peer=4, peer_bitmap=None, probe=None):
    c = OpenFlowConnection(set(versions), 0.0, probe_interval=probe)
    c.bytes_to_send()
    c.receive_bytes(hello_bytes(peer, peer_bitmap), 0.0)
    return c


def test_our_hello_carries_version_bitmap():
    c = OpenFlowConnection({1, 4}, 0.0)
    raw = c.bytes_to_send()
    assert raw[0] == 4 and raw[1] == of13.OFPT_HELLO
    assert codec.parse_hello_versions(raw) == {1, 4}


def test_negotiates_highest_common_version_from_bitmap():
    c = connected(peer=6, peer_bitmap={1, 4, 6})
    assert c.version == 4 and c.state is State.CONNECTED
    assert events(c) == [Connected(4)]


def test_peer_without_bitmap_means_all_versions_up_to_its_own():
    c = connected(versions={1}, peer=4)   # OF1.0-only bridge, OF1.3 peer w/o bitmap
    assert c.version == 1


def test_protocols_limit_negotiation_and_incompatible_gets_hello_failed():
    c = OpenFlowConnection({4}, 0.0)
    c.bytes_to_send()
    c.receive_bytes(hello_bytes(1), 0.0)
    out = split_messages(c.bytes_to_send())
    err = parse_reply(out[0])
    assert (err.type, err.code) == (of13.OFPET_HELLO_FAILED, of13.OFPHFC_INCOMPATIBLE)
    assert b"0x04" in err.data
    assert c.closed
    assert any(isinstance(e, ConnectionClosed) for e in events(c))


def test_first_message_must_be_hello():
    c = OpenFlowConnection({4}, 0.0)
    c.bytes_to_send()
    c.receive_bytes(struct.pack("!BBHI", 4, of13.OFPT_FEATURES_REQUEST, 8, 9), 0.0)
    err = parse_reply(split_messages(c.bytes_to_send())[0])
    assert err.type == of13.OFPET_HELLO_FAILED
    assert c.closed


def test_echo_answered_by_channel_with_same_xid_and_data():
    c = connected()
    req = p13.OFPEchoRequest(codec.datapath(4), data=b"ping")
    req.xid = 42
    req.serialize()
    c.receive_bytes(bytes(req.buf), 1.0)
    rep = parse_reply(c.bytes_to_send())
    assert type(rep).__name__ == "OFPEchoReply" and rep.xid == 42 and rep.data == b"ping"
    assert events(c) == [Connected(4)]


def test_partial_input_is_buffered_byte_by_byte():
    c = connected()
    events(c)
    raw = struct.pack("!BBHI", 4, of13.OFPT_FEATURES_REQUEST, 8, 5) + \
        struct.pack("!BBHI", 4, of13.OFPT_BARRIER_REQUEST, 8, 6)
    got = []
    for b in raw:
        c.receive_bytes(bytes([b]), 1.0)
        got += events(c)
    assert [type(e.msg).__name__ for e in got] == ["OFPFeaturesRequest", "OFPBarrierRequest"]
    assert [e.msg.xid for e in got] == [5, 6]


def test_length_below_header_is_bad_len_and_closes():
    c = connected()
    events(c)
    c.receive_bytes(struct.pack("!BBHI", 4, 5, 4, 7), 1.0)
    err = parse_reply(c.bytes_to_send())
    assert (err.type, err.code, err.xid) == (of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN, 7)
    assert c.closed


def test_wrong_version_gets_bad_version_and_connection_stays():
    c = connected()
    events(c)
    c.receive_bytes(struct.pack("!BBHI", 1, 5, 8, 3), 1.0)
    err = parse_reply(c.bytes_to_send())
    assert (err.type, err.code) == (of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_VERSION)
    assert err.data == struct.pack("!BBHI", 1, 5, 8, 3)
    assert not c.closed


def test_unknown_type_gets_bad_type_with_offending_bytes():
    c = connected()
    events(c)
    bad = struct.pack("!BBHI", 4, 99, 12, 8) + b"abcd"
    c.receive_bytes(bad, 1.0)
    err = parse_reply(c.bytes_to_send())
    assert (err.type, err.code, err.xid, err.data) == (
        of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_TYPE, 8, bad)
    assert ErrorSent(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_TYPE, 8) in events(c)


def test_truncated_body_gets_bad_len():
    c = connected()
    events(c)
    bad = struct.pack("!BBHI", 4, of13.OFPT_ROLE_REQUEST, 10, 8) + b"\0\0"
    c.receive_bytes(bad, 1.0)
    err = parse_reply(c.bytes_to_send())
    assert (err.type, err.code) == (of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)


def test_error_data_is_at_most_64_bytes():
    c = connected()
    events(c)
    bad = struct.pack("!BBHI", 4, 99, 200, 8) + bytes(192)
    c.receive_bytes(bad, 1.0)
    err = parse_reply(c.bytes_to_send())
    assert err.data == bad[:64]


def test_of10_errors_use_of10_header():
    c = connected(versions={1}, peer=1)
    events(c)
    c.receive_bytes(struct.pack("!BBHI", 1, 77, 8, 3), 1.0)
    err = parse_reply(c.bytes_to_send())
    assert err.version == 1 and (err.type, err.code) == (of10.OFPET_BAD_REQUEST, of10.OFPBRC_BAD_TYPE)


def test_inactivity_probe_then_disconnect():
    c = connected(probe=5.0)
    events(c)
    assert c.get_timer() == 5.0
    c.handle_timer(5.0)
    echo = parse_reply(c.bytes_to_send())
    assert type(echo).__name__ == "OFPEchoRequest"
    assert c.state is State.PROBING and c.get_timer() == 10.0
    c.handle_timer(10.0)
    assert c.closed and ConnectionClosed("inactivity probe timeout") in events(c)


def test_any_input_cancels_probe():
    c = connected(probe=5.0)
    c.handle_timer(5.0)
    c.bytes_to_send()
    rep = p13.OFPEchoReply(codec.datapath(4), data=b"")
    rep.xid = 1
    rep.serialize()
    c.receive_bytes(bytes(rep.buf), 6.0)
    assert c.state is State.CONNECTED and c.get_timer() == 11.0


def test_hello_timeout():
    c = OpenFlowConnection({4}, 0.0, hello_timeout=3)
    assert c.get_timer() == 3
    c.handle_timer(3)
    assert c.closed


def test_state_table_is_the_only_way_states_change():
    states = {s for pair in TRANSITIONS for s in (pair[0],)} | set(TRANSITIONS.values())
    assert states == set(State)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_garbage_never_raises(data):
    c = connected()
    c.receive_bytes(data, 1.0)
    c.bytes_to_send()
    events(c)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(0, 36)), st.binary(max_size=120), st.integers(0, 2**32 - 1))
def test_random_bodies_with_valid_header_get_error_or_event(msg_type, body, xid):
    c = connected()
    events(c)
    raw = struct.pack("!BBHI", 4, msg_type, 8 + len(body), xid) + body
    c.receive_bytes(raw, 1.0)
    out = split_messages(c.bytes_to_send())
    evs = events(c)
    assert out or evs or msg_type in (of13.OFPT_HELLO, of13.OFPT_ECHO_REPLY)
    for o in out:
        assert parse_reply(o) is not None
