"""UserSig generation against the reference implementation, and the renewing cache."""

from __future__ import annotations

import time
from unittest import mock

import pytest
import TLSSigAPIv2

from tim_async import TimClient
from tim_async.errors import TimConfigError, TimError
from tim_async.usersig import (
    InvalidUserSig,
    StaticUserSig,
    UserSigSigner,
    decode_usersig,
    generate_usersig,
    verify_usersig,
)

SPEC_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"


def _reference(sdkappid: int, key: str, identifier: str, expire: int, now: int) -> str:
    with mock.patch("time.time", return_value=now):
        sig: str = TLSSigAPIv2.TLSSigAPIv2(sdkappid, key).gen_sig(identifier, expire)
    return sig


def test_spec_worked_example() -> None:
    fields = decode_usersig(
        generate_usersig(1400000000, "administrator", SPEC_KEY, 86400, now=1700000000)
    )
    assert fields == {
        "TLS.ver": "2.0",
        "TLS.identifier": "administrator",
        "TLS.sdkappid": 1400000000,
        "TLS.expire": 86400,
        "TLS.time": 1700000000,
        "TLS.sig": "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
    }


@pytest.mark.parametrize(
    ("sdkappid", "identifier", "expire", "now"),
    [
        (1400000000, "administrator", 86400, 1700000000),
        (1600012345, "admin_ü", 180 * 86400, 1800000123),
        (1, "x", 10, 0),
    ],
)
def test_matches_reference_package(sdkappid: int, identifier: str, expire: int, now: int) -> None:
    ours = generate_usersig(sdkappid, identifier, SPEC_KEY, expire, now=now)
    ref = _reference(sdkappid, SPEC_KEY, identifier, expire, now)
    assert decode_usersig(ours) == decode_usersig(ref)
    # Both are URL-safe: no +, / or = survive.
    assert not set(ours) & set("+/=")


def test_verify_detects_wrong_key_and_accepts_reference() -> None:
    ref = _reference(1400000000, SPEC_KEY, "administrator", 3600, 1700000000)
    assert verify_usersig(ref, SPEC_KEY)[1] is True
    assert verify_usersig(ref, "another key")[1] is False


def test_userbuf_is_signed() -> None:
    sig = generate_usersig(1400000000, "a", SPEC_KEY, 60, now=5, userbuf=b"abc")
    fields, ok = verify_usersig(sig, SPEC_KEY)
    assert ok and fields["TLS.userbuf"] == "YWJj"


@pytest.mark.parametrize("bad", ["", "not base64!", "eJwLSS0uAQAEFAIO"])
def test_decode_rejects_garbage(bad: str) -> None:
    with pytest.raises(InvalidUserSig) as info:
        decode_usersig(bad)
    assert isinstance(info.value, TimError) and isinstance(info.value, ValueError)


def test_signer_caches_and_renews_before_expiry() -> None:
    now = [1_000_000.0]
    signer = UserSigSigner(1400000000, "administrator", SPEC_KEY, ttl=1000, clock=lambda: now[0])
    first = signer.current()
    assert decode_usersig(first)["TLS.time"] == 1_000_000
    now[0] += 500
    assert signer.current() is first  # cached
    # The margin is a fifth of the TTL: at 801 s of 1000 it is renewed, never sent near expiry.
    now[0] = 1_000_000 + 801
    second = signer.current()
    assert second != first
    assert decode_usersig(second)["TLS.time"] == 1_000_801
    assert verify_usersig(second, SPEC_KEY)[1]


def test_signer_never_returns_an_expired_sig_whatever_the_call_pattern() -> None:
    now = [0.0]
    signer = UserSigSigner(1, "a", SPEC_KEY, ttl=100, clock=lambda: now[0])
    for step in (0, 30, 50, 79.9, 80, 81, 500, 10_000, 10_099):
        now[0] = float(step)
        fields = decode_usersig(signer.current())
        assert fields["TLS.time"] + fields["TLS.expire"] - now[0] >= signer.margin


def test_signer_renew_forces_a_new_sig() -> None:
    now = [100.0]
    signer = UserSigSigner(1, "a", SPEC_KEY, ttl=3600, clock=lambda: now[0])
    first = signer.current()
    now[0] += 1
    assert signer.renew() is True
    assert signer.current() != first


def test_secrets_not_in_repr() -> None:
    signer = UserSigSigner(1, "a", SPEC_KEY, ttl=3600)
    sig = signer.current()
    assert SPEC_KEY not in repr(signer) and sig not in repr(signer)
    static = StaticUserSig(sig)
    assert sig not in repr(static)
    assert static.renew() is False and static.current() == sig


def test_bad_signer_config() -> None:
    with pytest.raises(TimConfigError, match="secret_key"):
        UserSigSigner(1, "a", "", ttl=3600)
    with pytest.raises(TimConfigError, match="usersig_ttl"):
        UserSigSigner(1, "a", "k", ttl=5)


def test_default_time_is_now() -> None:
    before = int(time.time())
    fields = decode_usersig(generate_usersig(1, "a", "k", 60))
    assert before <= fields["TLS.time"] <= int(time.time())


@pytest.mark.parametrize("ttl", ["86400", None, True, 9, float("nan")])
def test_bad_usersig_ttl_is_a_config_error(ttl: object) -> None:
    with pytest.raises(TimConfigError, match="usersig_ttl"):
        TimClient(1400000000, secret_key="k" * 64, usersig_ttl=ttl)  # type: ignore[arg-type]
