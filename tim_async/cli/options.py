"""Connection options shared by every command: flags, the environment, the client."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from tim_async._validate import INT64_MAX, INT64_MIN, UINT32_MAX
from tim_async.cli.meter import MeteredLimiter
from tim_async.errors import TimConfigError
from tim_async.models import CounterMode
from tim_async.regions import Region

if TYPE_CHECKING:
    from tim_async.client import TimClient

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

PROG: Final = "tim-async"
#: most HTTP connections a bulk pull opens (well below the usual limit of 1024 open files)
MAX_CONNECTIONS: Final = 256
DEFAULT_RATE_LIMIT: Final = 200

ENV_SDKAPPID: Final = "TIM_SDKAPPID"
ENV_IDENTIFIER: Final = "TIM_IDENTIFIER"
ENV_SECRET_KEY: Final = "TIM_SECRET_KEY"
ENV_USERSIG: Final = "TIM_USERSIG"
ENV_REGION: Final = "TIM_REGION"
ENV_BASE_URL: Final = "TIM_BASE_URL"
ENV_REDIS_URL: Final = "TIM_REDIS_URL"
REDIS_INSTALL: Final = "pip install 'tim-async[redis]' (from a checkout: pip install '.[redis]')"


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr, exit code 2."""


def rate_limit_arg(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'none', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty and may hold '=')."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def counter_pair(text: str) -> tuple[str, int]:
    key, value = key_value(text)
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"value of {key!r} must be an integer, got {value!r}"
        ) from None
    if not INT64_MIN <= number <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"value of {key!r} must be a signed 64-bit integer")
    return key, number


def mode_arg(text: str) -> CounterMode:
    for member in CounterMode:
        if text.lower() == member.value.lower():
            return member
    raise argparse.ArgumentTypeError(f"expected Set, Increase or Decrease, got {text!r}")


def client_options(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``TimClient`` keyword arguments from flags, then the environment.

    Raises :class:`UsageError` for a missing or bad setting. The secret key and the UserSig
    are never part of a message."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def setting(attr: str, var: str) -> str | None:
        value = getattr(args, attr, None)
        if value is None:
            value = env.get(var) or None
        return value

    sdkappid_text = setting("sdkappid", ENV_SDKAPPID)
    sdkappid: int | None = None
    if sdkappid_text is None:
        problems.append(f"no SDKAppID: set {ENV_SDKAPPID} or pass --sdkappid")
    else:
        try:
            sdkappid = int(sdkappid_text.strip())
        except ValueError:
            problems.append(f"SDKAppID must be a positive integer, got {sdkappid_text!r}")
        else:
            if not 0 < sdkappid <= UINT32_MAX:
                problems.append(f"SDKAppID must be a positive 32-bit integer, got {sdkappid}")

    # Credentials: flags win over the environment as a pair, so a --usersig flag is not
    # mixed up with a TIM_SECRET_KEY left in the environment.
    flag_key = getattr(args, "secret_key", None)
    flag_sig = getattr(args, "usersig", None)
    if flag_key is not None or flag_sig is not None:
        secret_key, usersig, origin = flag_key, flag_sig, "--secret-key and --usersig"
    else:
        secret_key = env.get(ENV_SECRET_KEY) or None
        usersig = env.get(ENV_USERSIG) or None
        origin = f"{ENV_SECRET_KEY} and {ENV_USERSIG}"
    if secret_key is None and usersig is None:
        problems.append(
            f"no credentials: set {ENV_SECRET_KEY} (recommended) or {ENV_USERSIG}, "
            "or pass --secret-key / --usersig"
        )
    elif secret_key is not None and usersig is not None:
        problems.append(f"give only one of {origin}")
    elif secret_key is not None and not secret_key.strip():
        problems.append("the secret key is empty")

    identifier = setting("identifier", ENV_IDENTIFIER) or "administrator"
    region_text = setting("region", ENV_REGION)
    region: Region | None = None
    if region_text is not None:
        try:
            region = Region.parse(region_text)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    base_url = setting("base_url", ENV_BASE_URL)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        problems.append(f"base URL must start with http:// or https://, got {base_url!r}")
    redis_url = setting("redis_url", ENV_REDIS_URL)
    if redis_url is not None:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append(
                f"--redis-url must start with redis://, rediss:// or unix://, got {redis_url!r}"
            )
        elif getattr(args, "rate_limit", DEFAULT_RATE_LIMIT) is None:
            problems.append("--redis-url shares a rate limit: it cannot go with --rate-limit none")
        elif not _redis_installed():
            problems.append(f"--redis-url needs the redis extra: {REDIS_INSTALL}")
    if problems:
        raise UsageError("; ".join(problems))

    options: dict[str, Any] = {
        "redis_url": redis_url,
        "sdkappid": sdkappid,
        "identifier": identifier,
        "secret_key": secret_key,
        "usersig": usersig,
        "base_url": base_url,
        "rate_limit": getattr(args, "rate_limit", DEFAULT_RATE_LIMIT),
        "timeout": getattr(args, "timeout", 10.0),
        "max_retries": getattr(args, "max_retries", 3),
    }
    if region is not None and base_url is None:
        # --base-url overrides the region (the README's table); the region is still checked
        options["region"] = region
    return options


def _redis_installed() -> bool:
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        return False
    return True


def new_limiter(options: Mapping[str, Any]) -> MeteredLimiter:
    """The client's limiter, metered: a :class:`~tim_async.limiter_redis.RedisLimiter` for
    ``--redis-url`` (one budget for every process using that Redis and SDKAppID), else the
    in-process limiter of ``--rate-limit``."""
    from tim_async.limiter import RateLimiter, SlidingWindowLimiter, UnlimitedLimiter

    inner: RateLimiter
    rate = options["rate_limit"]
    if options.get("redis_url") is not None:
        from tim_async.limiter_redis import RedisLimiter

        try:
            inner = RedisLimiter.from_url(
                options["redis_url"], rate=rate, sdkappid=options["sdkappid"]
            )
        except TimConfigError as exc:
            raise UsageError(str(exc)) from None
    elif rate is None:
        inner = UnlimitedLimiter()
    else:
        inner = SlidingWindowLimiter(rate)
    return MeteredLimiter(inner)


@contextlib.asynccontextmanager
async def connect(
    options: Mapping[str, Any], **overrides: Any
) -> AsyncIterator[tuple[TimClient, MeteredLimiter]]:
    """A :class:`TimClient` from :func:`client_options` (its errors become
    :class:`UsageError`) and its metered limiter; both closed at the end."""
    from tim_async.client import TimClient  # imported late: bad input exits without aiohttp

    settings = {k: v for k, v in options.items() if k != "redis_url"}
    settings.update(overrides)
    meter = new_limiter(options)
    try:
        try:
            tim = TimClient(**settings, limiter=meter)
        except TimConfigError as exc:
            raise UsageError(str(exc)) from None
        async with tim:
            yield tim, meter
    finally:
        await meter.aclose()


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Connection flags. Defaults are SUPPRESS so that a flag given before the command is not
    overwritten by the subcommand's unset copy."""
    group = parser.add_argument_group(
        "connection (flags win over environment variables)",
    )
    s = argparse.SUPPRESS
    group.add_argument(
        "--sdkappid", default=s, metavar="ID", help=f"the app's SDKAppID [env {ENV_SDKAPPID}]"
    )
    group.add_argument(
        "--identifier",
        default=s,
        metavar="ADMIN",
        help=f"App admin account [env {ENV_IDENTIFIER}; default administrator]",
    )
    group.add_argument(
        "--secret-key",
        default=s,
        metavar="KEY",
        help=f"app secret key; prefer the environment variable {ENV_SECRET_KEY}: "
        "a flag is visible to other users in `ps`",
    )
    group.add_argument(
        "--usersig",
        default=s,
        metavar="SIG",
        help=f"a ready-made admin UserSig instead of the key [env {ENV_USERSIG}]",
    )
    regions = ", ".join(r.name.lower() for r in Region)
    group.add_argument(
        "--region",
        default=s,
        help=f"data centre: {regions} [env {ENV_REGION}; default china]",
    )
    group.add_argument(
        "--base-url",
        default=s,
        metavar="URL",
        help=f"override the region's address, e.g. an emulator [env {ENV_BASE_URL}]",
    )
    group.add_argument(
        "--rate-limit",
        default=s,
        type=rate_limit_arg,
        metavar="N",
        help=f"calls/s per REST command, or 'none' [default {DEFAULT_RATE_LIMIT}]",
    )
    group.add_argument(
        "--timeout",
        default=s,
        type=positive_float,
        metavar="SECONDS",
        help="limit for each whole call, retries included [default 10]",
    )
    group.add_argument(
        "--max-retries",
        default=s,
        type=int_range(0, 100),
        metavar="N",
        help="retries of a failed call [default 3]",
    )
    group.add_argument(
        "--redis-url",
        default=s,
        metavar="URL",
        help="share the rate limit through Redis with every process using the same URL and "
        f"SDKAppID, e.g. redis://localhost:6379/0 (needs the redis extra) [env {ENV_REDIS_URL}]",
    )
