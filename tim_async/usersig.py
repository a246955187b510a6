"""UserSig: TLSSigAPIv2-compatible generation, decoding, verification and a renewing cache.

The algorithm (spec section 7): sign ``TLS.identifier``, ``TLS.sdkappid``, ``TLS.time``,
``TLS.expire`` (and optionally ``TLS.userbuf``) with HMAC-SHA256 keyed by the secret key, put the
fields and ``TLS.sig`` in a JSON object, zlib-compress it, base64 it and make it URL-safe with
``+``→``*``, ``/``→``-``, ``=``→``_``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Callable
from typing import Any

from .errors import TimConfigError, TimError

__all__ = [
    "InvalidUserSig",
    "StaticUserSig",
    "UserSigProvider",
    "UserSigSigner",
    "decode_usersig",
    "generate_usersig",
    "sign_content",
    "verify_usersig",
]

_TO_URL = str.maketrans({"+": "*", "/": "-", "=": "_"})
_FROM_URL = str.maketrans({"*": "+", "-": "/", "_": "="})


class InvalidUserSig(TimError, ValueError):
    """A UserSig that cannot be decoded (not base64, not zlib, not the JSON object); a
    ``ValueError`` too."""


def sign_content(
    secret_key: str,
    identifier: str,
    sdkappid: int,
    now: int,
    expire: int,
    userbuf_b64: str | None = None,
) -> str:
    """Return ``TLS.sig``: standard base64 of HMAC-SHA256 over the TLSSigAPIv2 text."""
    text = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{now}\n"
        f"TLS.expire:{expire}\n"
    )
    if userbuf_b64 is not None:
        text += f"TLS.userbuf:{userbuf_b64}\n"
    digest = hmac.new(secret_key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_usersig(
    sdkappid: int,
    identifier: str,
    secret_key: str,
    expire: int = 180 * 86400,
    *,
    now: int | None = None,
    userbuf: bytes | None = None,
) -> str:
    """Generate a UserSig valid for ``expire`` seconds from ``now`` (default: current time)."""
    if now is None:
        now = int(time.time())
    fields: dict[str, Any] = {
        "TLS.ver": "2.0",
        "TLS.identifier": str(identifier),
        "TLS.sdkappid": int(sdkappid),
        "TLS.expire": int(expire),
        "TLS.time": int(now),
    }
    userbuf_b64 = None
    if userbuf is not None:
        userbuf_b64 = base64.b64encode(userbuf).decode("ascii")
        fields["TLS.userbuf"] = userbuf_b64
    fields["TLS.sig"] = sign_content(
        secret_key, str(identifier), int(sdkappid), int(now), int(expire), userbuf_b64
    )
    raw = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(zlib.compress(raw)).decode("ascii").translate(_TO_URL)


def decode_usersig(usersig: str) -> dict[str, Any]:
    """Decode a UserSig to its JSON fields (no signature check). Raises :class:`InvalidUserSig`."""
    try:
        compressed = base64.b64decode(usersig.translate(_FROM_URL), validate=True)
        data = json.loads(zlib.decompress(compressed))
    except (binascii.Error, zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidUserSig("UserSig is not a TLSSigAPIv2 token") from exc
    if not isinstance(data, dict):
        raise InvalidUserSig("UserSig does not hold a JSON object")
    return data


def verify_usersig(usersig: str, secret_key: str) -> tuple[dict[str, Any], bool]:
    """Decode ``usersig`` and tell whether its ``TLS.sig`` matches ``secret_key``."""
    fields = decode_usersig(usersig)
    try:
        expected = sign_content(
            secret_key,
            str(fields["TLS.identifier"]),
            int(fields["TLS.sdkappid"]),
            int(fields["TLS.time"]),
            int(fields["TLS.expire"]),
            fields.get("TLS.userbuf"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidUserSig("UserSig lacks a TLSSigAPIv2 field") from exc
    return fields, hmac.compare_digest(expected, str(fields.get("TLS.sig", "")))


class UserSigProvider:
    """Gives the UserSig to put in the next request."""

    def current(self) -> str:
        raise NotImplementedError

    def renew(self) -> bool:
        """Force a new UserSig (after 70001). Return False when renewal is impossible."""
        return False


class StaticUserSig(UserSigProvider):
    """A ready-made UserSig supplied by the caller: cannot be renewed."""

    __slots__ = ("_usersig",)

    def __init__(self, usersig: str) -> None:
        if not usersig:
            raise TimConfigError("usersig must be a non-empty string")
        self._usersig = usersig

    def current(self) -> str:
        return self._usersig

    def __repr__(self) -> str:
        return "StaticUserSig(<redacted>)"


class UserSigSigner(UserSigProvider):
    """Generates the admin UserSig from the secret key, caches it and renews it early.

    A cached UserSig is replaced once less than ``margin`` seconds of its validity remain, where
    ``margin`` is a fifth of the TTL, at most one hour: it is never sent close to expiry.
    """

    __slots__ = ("_clock", "_expires_at", "_identifier", "_sdkappid", "_secret", "_sig", "_ttl")

    def __init__(
        self,
        sdkappid: int,
        identifier: str,
        secret_key: str,
        ttl: int = 86400,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(secret_key, str) or not secret_key:
            raise TimConfigError("secret_key must be a non-empty string")
        try:
            secret_key.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (os.environ decodes undecodable bytes so): never show the key.
            raise TimConfigError(
                "secret_key cannot be encoded as UTF-8 (it holds a lone surrogate, e.g. from "
                "undecodable bytes in an environment variable): check the key"
            ) from None
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 10:
            raise TimConfigError(f"usersig_ttl must be a number of seconds >= 10, got {ttl!r}")
        self._sdkappid = sdkappid
        self._identifier = identifier
        self._secret = secret_key
        self._ttl = int(ttl)
        self._clock = clock
        self._sig = ""
        self._expires_at = 0.0

    @property
    def margin(self) -> float:
        return min(3600.0, self._ttl / 5)

    def current(self) -> str:
        now = self._clock()
        if not self._sig or now >= self._expires_at - self.margin:
            self._generate(now)
        return self._sig

    def renew(self) -> bool:
        self._generate(self._clock())
        return True

    def _generate(self, now: float) -> None:
        issued = int(now)
        self._sig = generate_usersig(
            self._sdkappid, self._identifier, self._secret, self._ttl, now=issued
        )
        self._expires_at = issued + self._ttl

    def __repr__(self) -> str:
        return (
            f"UserSigSigner(sdkappid={self._sdkappid}, identifier={self._identifier!r}, "
            f"ttl={self._ttl}, secret_key=<redacted>)"
        )
