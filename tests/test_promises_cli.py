"""README "Command line" statements that no other test checked, run as a user runs them
(``python -m tim_async`` in a subprocess) against the emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import pytest
from test_cli import run_cli

from tim_async.testing import FakeTimServer, Fault

COUNTER = "group_open_http_svc/update_group_counter"
PULL = "openim_msg_ext_http_svc/group_get_key_values"
FRAGMENT = 8


def _env(server: FakeTimServer, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    env.pop("PYTHONUNBUFFERED", None)  # as a user's shell has it: stdout is block-buffered
    env.update(
        TIM_SDKAPPID=str(server.sdkappid),
        TIM_SECRET_KEY=server.secret_key,
        TIM_BASE_URL=server.base_url,
    )
    env.update(changes)
    return env


async def _run(
    *args: str, env: Mapping[str, str], stdin: bytes = b"", seconds: float = 60.0
) -> tuple[int, str, str]:
    """``python -m tim_async ARGS`` through test_cli's runner (no secret, no traceback)."""
    result = await run_cli(*args, env=env, stdin=stdin, seconds=seconds)
    return result.rc, result.out, result.err


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    # A key that is not hex: no run of digits in the output can look like a piece of it.
    key = "sk-AUDIT-q7ZxLmN3vB8kRt2YwE6uPj4HsGd9FcVa5TnQ1oXiUe0r"
    async with FakeTimServer(secret_key=key, rate_limit=None, seed=3) as srv:
        yield srv


async def test_a_flag_wins_over_its_variable(server: FakeTimServer) -> None:
    """README: "A flag wins over its variable"."""
    gid = server.create_group()
    server.set_group_attrs(gid, {"topic": "launch"})
    wrong = _env(
        server,
        TIM_SDKAPPID=str(server.sdkappid + 1),
        TIM_BASE_URL="http://127.0.0.1:9",  # nothing listens there
        TIM_IDENTIFIER="nobody",
        TIM_SECRET_KEY="not-the-key",
    )
    args = ["attr", "get", "--group", gid, "--max-retries", "0", "--timeout", "5"]
    rc, out, err = await _run(*args, env=wrong)
    assert rc == 1, err  # the variables alone are read, and are wrong
    rc, out, err = await _run(
        "--sdkappid",
        str(server.sdkappid),
        "--base-url",
        server.base_url,
        "--identifier",
        server.admin,
        *args,
        "--secret-key",
        server.secret_key,
        env=wrong,
    )
    assert rc == 0, err
    assert json.loads(out) == {"group": gid, "attrs": {"topic": "launch"}}


async def test_counter_update_needs_a_mode(server: FakeTimServer) -> None:
    """README: "counter update --mode is required"."""
    gid = server.create_group()
    rc, out, err = await _run("counter", "update", "--group", gid, "likes=1", env=_env(server))
    assert rc == 2
    assert "--mode" in err and out == ""
    assert server.requests == []


@pytest.mark.parametrize(
    "fault",
    [Fault.DROP_AFTER_APPLY, Fault.http(502), Fault.NON_JSON],
    ids=["drop_after_apply", "http_502", "non_json"],
)
async def test_an_increase_with_an_unknown_outcome_fails_and_is_not_resent(
    server: FakeTimServer, fault: Fault
) -> None:
    """README: "Increase and Decrease are never resent ...: when the outcome is unknown the
    command fails rather than risk counting twice" (time is left for a retry here: the
    connection is lost after the server applied the call, or the answer is unusable)."""
    gid = server.create_group()
    server.set_group_counters(gid, {"likes": 7})
    server.faults.script(COUNTER, [fault])
    rc, out, err = await _run(
        "counter", "update", "--group", gid, "--mode", "Increase", "likes=1", env=_env(server)
    )
    assert rc == 1
    assert out == ""
    assert err.strip(), "no message"
    assert len(server.requests_for(COUNTER)) == 1
    if fault.applies:
        assert server.group_counters(gid) == {"likes": 8}  # applied once, never twice


async def test_pull_bulk_error_code_is_null_without_a_usable_answer(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    """README: "code is the server's ErrorCode, null when no usable answer came back"; a failed
    target does not stop the run; exit code 1."""
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(3)]
    server.put_group_extensions(gid, seqs[1], {"k": "v"})
    server.faults.script(PULL, [Fault.http(502)])
    targets = tmp_path / "t.csv"
    targets.write_text("".join(f"{gid},{seq}\n" for seq in seqs))
    rc, out, err = await _run(
        "ext", "pull-bulk", str(targets), "--max-retries", "0", "--concurrency", "1",
        env=_env(server),
    )  # fmt: skip
    assert rc == 1, err
    records = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["line"])
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["error"]["code"] is None
    assert records[0]["error"]["type"] == "TimTransportError"
    assert "items" not in records[0]
    assert records[1]["items"] == [{"key": "k", "value": "v", "seq": 1}]
    assert records[2]["items"] == []
    # README: "the error lines of one run can be fed to the next" (extra JSON keys ignored).
    again = "".join(line + "\n" for line in out.splitlines() if '"error"' in line).encode()
    rc, out, err = await _run("ext", "pull-bulk", "--quiet", env=_env(server), stdin=again)
    assert rc == 0, err
    (retried,) = [json.loads(line) for line in out.splitlines()]
    assert (retried["group"], retried["msg_seq"], retried["items"]) == (gid, seqs[0], [])


async def test_pull_bulk_writes_each_line_as_soon_as_it_completes(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    """README: "One JSON line per target is written to stdout and flushed as soon as it
    completes (so not in input order)"."""
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(2)]
    server.faults.script(PULL, [Fault.slow(120.0)])  # the first target never completes here
    targets = tmp_path / "t.jsonl"
    targets.write_text("".join(json.dumps({"group": gid, "msg_seq": s}) + "\n" for s in seqs))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tim_async", "ext", "pull-bulk", str(targets), "--quiet",
        "--timeout", "300",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(server),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # Generous: the line is due milliseconds after the CLI starts; without the flush it
        # would come only when the run ends, minutes later.
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30.0))
        assert first["msg_seq"] == seqs[1]  # the second target, while the first still waits
        assert first["items"] == []
    finally:
        proc.kill()
        await proc.communicate()


async def test_pull_bulk_warns_when_concurrency_outruns_the_timeout(
    server: FakeTimServer,
) -> None:
    """README: "more than the rate limit serves within --timeout only makes calls time out in
    the queue, and the CLI warns"; the default does not."""
    args = ["ext", "pull-bulk", "-", "--rate-limit", "200", "--timeout", "10"]
    rc, _, err = await _run(*args, "--concurrency", "4000", env=_env(server))
    assert rc == 0, err
    assert "warning" in err and "--concurrency" in err
    rc, _, err = await _run(*args, env=_env(server))
    assert rc == 0, err
    assert "warning" not in err


async def test_the_cli_prints_no_fragment_of_a_secret(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    """README: "The CLI never prints the secret key or a UserSig", on failure paths too."""
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.faults.script(PULL, [Fault.http(502), Fault.NON_JSON, Fault.code(70009)])
    targets = tmp_path / "t.csv"
    targets.write_text(f"{gid},{seq}\n{gid},{seq}\n{gid},{seq}\n{gid},999\n")
    texts = []
    for args in (
        ["ext", "pull-bulk", str(targets), "--max-retries", "0", "--concurrency", "1"],
        ["ext", "get", "--group", gid, "--msg-seq", "999"],
        ["attr", "get", "--group", "@TGS#NONE"],
    ):
        _, out, err = await _run(*args, env=_env(server))
        texts += [out, err]
    sigs = {entry.query["usersig"] for entry in server.requests}
    assert sigs
    secrets = {server.secret_key} | sigs | {quote(sig, safe="") for sig in sigs}
    grams = {s[i : i + FRAGMENT] for s in secrets for i in range(len(s) - FRAGMENT + 1)}
    found = [
        text[i : i + FRAGMENT]
        for text in texts
        for i in range(len(text) - FRAGMENT + 1)
        if text[i : i + FRAGMENT] in grams
    ]
    assert found == []


async def test_installing_the_package_installs_the_tim_async_command() -> None:
    """README: "Installing the package installs tim-async (also python -m tim_async)"."""
    script = pathlib.Path(sys.executable).with_name("tim-async")
    if not script.exists():
        pytest.skip(f"the package is not installed in this environment ({script} missing)")
    for command in ([str(script)], [sys.executable, "-m", "tim_async"]):
        proc = await asyncio.create_subprocess_exec(
            *command, "--help", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert all(name in out.decode() for name in ("demo", "ext", "attr", "counter"))


async def test_demo_messages_flag_sets_the_size_of_the_bulk_pull() -> None:
    """README: "--messages N changes the size of the bulk pull"; exits 0 when every check
    passes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    rc, out, err = await _run("demo", "--messages", "100", env=env)
    assert rc == 0, out + err
    assert "(100 lists compared)" in out
    assert "[FAIL]" not in out
