"""TimClient: the public entry point."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from types import TracebackType
from typing import Any

import aiohttp

from ._validate import plain_json
from .endpoints import GroupAttr, GroupCounter, MsgExt
from .errors import TimConfigError
from .limiter import RateLimiter, SlidingWindowLimiter, UnlimitedLimiter
from .regions import Region
from .retry import RetryPolicy
from .session import CallStats, Session
from .usersig import StaticUserSig, UserSigProvider, UserSigSigner

__all__ = ["TimClient"]

_U32 = 0xFFFFFFFF


class TimClient:
    """An asyncio client for one Tencent Cloud Chat app. Safe to share across tasks.

    Use it as ``async with TimClient(...) as tim:`` (or call :meth:`close`). Give either the
    app's ``secret_key`` (the SDK generates and renews the admin UserSig) or a ready-made
    ``usersig``. ``region`` picks the data centre (default China); ``base_url`` replaces it (an
    emulator, a proxy): give one or the other. ``rate_limit`` is the calls/second allowed per
    REST command (``None``: no client-side limit); ``limiter`` replaces the in-process limiter
    (e.g. one shared by several clients, or through Redis): the client never closes a limiter
    it was given.
    ``timeout`` bounds each whole call, retries and every page of a paged pull included;
    ``retry`` replaces the default :class:`~tim_async.retry.RetryPolicy` (backoff base and
    cap). A caller-supplied aiohttp ``session`` is used as is and never closed by the SDK.
    """

    def __init__(
        self,
        sdkappid: int,
        identifier: str = "administrator",
        *,
        secret_key: str | None = None,
        usersig: str | None = None,
        usersig_ttl: int = 86400,
        region: Region | str | None = None,
        base_url: str | None = None,
        rate_limit: int | None = 200,
        limiter: RateLimiter | None = None,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        connections: int = 100,
    ) -> None:
        if isinstance(sdkappid, bool) or not isinstance(sdkappid, int):
            raise TimConfigError(f"sdkappid must be an int, got {type(sdkappid).__name__}")
        if not 0 < sdkappid <= _U32:
            raise TimConfigError(f"sdkappid must be a positive 32-bit integer, got {sdkappid}")
        if not isinstance(identifier, str) or not identifier:
            raise TimConfigError("identifier must be a non-empty string (an App admin account)")
        if (secret_key is None) == (usersig is None):
            raise TimConfigError("give exactly one of secret_key (recommended) or usersig")
        if region is not None and base_url is not None:
            raise TimConfigError(
                "give region or base_url, not both: base_url replaces the region's domains "
                "(an emulator, a proxy)"
            )
        try:
            region = Region.CHINA if region is None else Region.parse(region)
        except (TypeError, ValueError) as exc:
            raise TimConfigError(str(exc)) from None
        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise TimConfigError(f"rate_limit must be a positive int or None, got {rate_limit!r}")
        if not timeout > 0:
            raise TimConfigError(f"timeout must be positive, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise TimConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise TimConfigError(f"base_url must start with http:// or https://, got {base_url!r}")

        provider: UserSigProvider
        if secret_key is not None:
            provider = UserSigSigner(sdkappid, identifier, secret_key, usersig_ttl)
        else:
            assert usersig is not None
            provider = StaticUserSig(usersig)

        # The client closes only a limiter it made (its own, or a per-app view of a shared
        # one): a limiter given as is may serve other clients too.
        owns_limiter = True
        if limiter is None:
            limiter = UnlimitedLimiter() if rate_limit is None else SlidingWindowLimiter(rate_limit)
        elif hasattr(limiter, "bind"):
            bound = limiter.bind(sdkappid)
            owns_limiter = bound is not limiter
            limiter = bound
        else:
            owns_limiter = False

        self.sdkappid = sdkappid
        self.identifier = identifier
        self.region: Region | None = None if base_url else region  # None: base_url replaces it
        self.rate_limit = rate_limit
        base_urls = [base_url] if base_url else [region.base_url, region.backup_base_url]
        self._session = Session(
            base_urls=base_urls,
            sdkappid=sdkappid,
            identifier=identifier,
            usersig=provider,
            limiter=limiter,
            retry=retry if retry is not None else RetryPolicy(max_retries=max_retries),
            timeout=timeout,
            http=session,
            connections=connections,
            owns_limiter=owns_limiter,
        )

    # ------------------------------------------------------------------ endpoints

    @cached_property
    def msg_ext(self) -> MsgExt:
        """Message extensions (``openim_msg_ext_http_svc``)."""
        return MsgExt(self._session)

    @cached_property
    def group_attr(self) -> GroupAttr:
        """Group custom attributes."""
        return GroupAttr(self._session)

    @cached_property
    def group_counter(self) -> GroupCounter:
        """Group counters."""
        return GroupCounter(self._session)

    async def call(
        self, api: str, body: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """Call any REST command (``"service/command"``) with a JSON body; returns the decoded
        answer once its envelope is checked. Goes through the same limiter, retries and error
        mapping as the typed methods. Pass ``idempotent=False`` for a call that must not be
        resent once it may have reached the server. ``body`` is any mapping (nested mappings,
        lists and tuples included); NaN and infinity, which JSON cannot carry, are refused."""
        return await self._session.call(api, plain_json(body), idempotent=idempotent)

    # ------------------------------------------------------------------ lifecycle

    @property
    def stats(self) -> CallStats:
        """Counters of calls, attempts and retries made by this client."""
        return self._session.stats

    @property
    def base_url(self) -> str:
        return self._session.base_url

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        """Close the client. Idempotent; a caller-supplied aiohttp session stays open."""
        await self._session.close()

    async def __aenter__(self) -> TimClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        limit = "none" if self.rate_limit is None else f"{self.rate_limit}/s"
        return (
            f"TimClient(sdkappid={self.sdkappid}, identifier={self.identifier!r}, "
            f"base_url={self.base_url!r}, rate_limit={limit})"
        )
