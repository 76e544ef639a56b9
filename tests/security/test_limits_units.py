"""The pure parts of `raftbox.httpserve`: the limits' validation, the address key, the
connection table (caps, and memory bounded by the open connections)."""

from __future__ import annotations

import pytest

from raftbox.httpserve import ConnectionLimiter, HttpLimits, address_key, bad_input_text


def test_limits_must_be_positive_except_the_per_address_cap():
    with pytest.raises(ValueError, match="header_timeout_s"):
        HttpLimits(header_timeout_s=0)
    with pytest.raises(ValueError, match="connections_max"):
        HttpLimits(connections_max=-1)
    assert HttpLimits(connections_per_address_max=0).connections_per_address_max == 0


def test_the_arg_header_fits_under_the_header_limit():
    from raftbox.api.args import ARG_HEADER_MAX_BYTES

    d = HttpLimits()
    assert d.header_field_max_bytes > ARG_HEADER_MAX_BYTES + len("Dropbox-API-Arg: ")
    assert d.header_total_max_bytes > d.header_field_max_bytes


def test_address_key_groups_ipv6_by_64_and_keeps_ipv4_whole():
    assert address_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert address_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("2001:db8:1:2:ffff::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    assert address_key("") == "" and address_key(None) == ""


def test_per_address_and_per_process_caps():
    lim = ConnectionLimiter(connections_max=3, per_address_max=2)
    assert lim.admit("a") and lim.admit("a")
    assert not lim.admit("a")  # the address is full
    assert lim.admit("b")
    assert not lim.admit("c")  # the process is full
    assert lim.refused == 2
    lim.release("a")
    assert lim.admit("c")
    assert lim.by_address == {"a": 1, "b": 1, "c": 1}


def test_no_per_address_cap_when_zero():
    lim = ConnectionLimiter(connections_max=10, per_address_max=0)
    assert all(lim.admit("proxy") for _ in range(10))
    assert not lim.admit("proxy")


def test_the_table_holds_only_open_connections():
    lim = ConnectionLimiter(connections_max=10, per_address_max=1)
    for i in range(100_000):  # many addresses come and go
        key = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        assert lim.admit(key)
        lim.release(key)
    assert lim.open == 0 and lim.by_address == {}


def test_bad_input_text_is_dropbox_shaped():
    assert bad_input_text("files/upload", "x") == 'Error in call to API function "files/upload": x'
    assert bad_input_text(None, "x") == "Error in call to API function: x"
