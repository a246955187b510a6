"""The emulator of the bulk benchmarks, in another process, seeded through its Python API.

Run as a script it starts a :class:`~tim_async.testing.FakeTimServer`, seeds it, prints one JSON
line (``base_url``, the one-page group's id and MsgSeqs, the one-to-one MsgKeys) and serves until
SIGTERM. Seeding:

* group ``@TGS#SEEDGROUP``: messages 1..``--messages`` with 1..``--keys-max`` pairs each,
  written 20 per set call (what ``bench_bulk.py``'s page count assumes);
* group ``@TGS#SMALL``: ``--small`` one-page messages (1-5 pairs);
* ``--c2c`` one-page one-to-one messages from ``alice`` to ``bob`` (1-5 pairs).

It uses the Python API, not the emulator's command-line seeding flags, so it does not depend on
their names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

SEED_GROUP_ID = _common.SEED_GROUP_ID
SMALL_GROUP_ID = "@TGS#SMALL"


async def serve(args: argparse.Namespace) -> None:
    from tim_async.testing import FakeTimServer

    rate = None if args.rate == "none" else int(args.rate)
    server = FakeTimServer(
        host="127.0.0.1", port=0, rate_limit=rate, page_size=200, seed=args.seed,
        log_requests=False,
    )  # fmt: skip
    rng = random.Random(args.seed)
    if args.messages:
        server.create_group(SEED_GROUP_ID, "Public")
        for _ in range(args.messages):
            seq = server.send_group_msg(SEED_GROUP_ID)
            count = rng.randint(1, args.keys_max)
            server.put_group_extensions(
                SEED_GROUP_ID,
                seq,
                {f"k{i}": f"v{seq}-{i}-{rng.randrange(1 << 30)}" for i in range(count)},
            )
    small: list[int] = []
    if args.small:
        server.create_group(SMALL_GROUP_ID, "Public")
        for _ in range(args.small):
            seq = server.send_group_msg(SMALL_GROUP_ID)
            server.put_group_extensions(
                SMALL_GROUP_ID, seq, {f"s{i}": "x" for i in range(rng.randint(1, 5))}
            )
            small.append(seq)
    keys: list[str] = []
    for _ in range(args.c2c):
        key = server.send_c2c_msg("alice", "bob")
        server.put_c2c_extensions(
            "alice", "bob", key, {f"c{i}": "y" for i in range(rng.randint(1, 5))}
        )
        keys.append(key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        line = {"base_url": server.base_url, "small_group": SMALL_GROUP_ID, "small": small,
                "c2c_keys": keys}  # fmt: skip
        print(json.dumps(line), flush=True)
        await stop.wait()


@contextlib.contextmanager
def bulk_emulator(
    *, rate: int | None, messages: int = 0, keys_max: int = 300, small: int = 0, c2c: int = 0,
    seed: int = 1,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Start this script in another process; yield its JSON line plus ``proc``; stop it."""
    cmd = [
        sys.executable, __file__, "--rate", "none" if rate is None else str(rate),
        "--messages", str(messages), "--keys-max", str(keys_max), "--small", str(small),
        "--c2c", str(c2c), "--seed", str(seed),
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True,
            cwd=_common.REPO,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                errors.seek(0)
                raise RuntimeError(f"the emulator did not start: {errors.read()[-2000:]}")
            info: dict[str, Any] = json.loads(line)
            info["proc"] = proc
            yield info
        finally:
            _common.stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="none")
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--keys-max", type=int, default=300)
    parser.add_argument("--small", type=int, default=0)
    parser.add_argument("--c2c", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
