"""The command line's write commands, ``call``, ``--redis-url``, flags against variables, and
the stdin / stdout edge cases (subprocesses against the emulator in the test's loop)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import pty
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _helpers import max_in_window
from test_cli import TIMEOUT, Result, _check_output, cli_env, run_cli

from tim_async.cli import main
from tim_async.testing import FakeTimServer, Fault
from tim_async.testing.redis_server import redis_server

EXT_SET = "openim_msg_ext_http_svc/group_set_key_values"


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None, seed=5) as srv:
        yield srv


def message(server: FakeTimServer, pairs: int = 3) -> tuple[str, int]:
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {f"k{i}": f"v{i}" for i in range(pairs)})
    return gid, seq


async def run_fds(
    *args: str, env: dict[str, str], stdin: Any, stdout: Any, seconds: float = TIMEOUT
) -> Result:
    """Run the CLI with the given stdin / stdout (file descriptors or PIPE)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async",
        *args,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), seconds)
    out, err = (out_b or b"").decode(), err_b.decode()
    _check_output(out, err, ())
    assert proc.returncode is not None
    return Result(proc.returncode, out, err)


# =========================================================================== write commands


async def test_ext_set_delete_clear_on_a_group_message(server: FakeTimServer) -> None:
    gid, seq = message(server)
    env = cli_env(server)
    target = ["--group", gid, "--msg-seq", str(seq)]
    result = await run_cli("ext", "set", *target, "a=1", "b=x=y", "k0=", env=env)
    assert result.rc == 0, result.err
    (record,) = result.records()
    assert record["group"] == gid and record["operation"] == "set"
    assert {r["key"] for r in record["results"]} == {"a", "b", "k0"}
    state = server.group_extensions(gid, seq)
    assert state["a"][0] == "1" and state["b"][0] == "x=y" and state["k0"][0] == ""

    result = await run_cli("ext", "delete", *target, "a", "k1", env=env)
    assert result.rc == 0, result.err
    assert set(server.group_extensions(gid, seq)) == {"b", "k0", "k2"}

    result = await run_cli("ext", "clear", *target, env=env)
    assert result.rc == 0, result.err
    assert server.group_extensions(gid, seq) == {}
    assert result.records()[0]["operation"] == "clear"


async def test_ext_set_on_a_one_to_one_message(server: FakeTimServer) -> None:
    key = server.send_c2c_msg("alice", "bob")
    result = await run_cli(
        "ext", "set", "--to", "bob", "--msg-key", key, "--from", "alice", "read=yes",
        env=cli_env(server),
    )  # fmt: skip
    assert result.rc == 0, result.err
    assert server.c2c_extensions("alice", "bob", key)["read"][0] == "yes"
    assert result.records()[0]["to"] == "bob"


async def test_attr_write_commands(server: FakeTimServer) -> None:
    gid = server.create_group()
    server.set_group_attrs(gid, {"topic": "a", "owner": "alice"})
    env = cli_env(server)
    assert (await run_cli("attr", "modify", "--group", gid, "topic=b", "lang=en", env=env)).rc == 0
    assert server.group_attrs(gid) == {"topic": "b", "owner": "alice", "lang": "en"}
    assert (await run_cli("attr", "set", "--group", gid, "only=1", env=env)).rc == 0
    assert server.group_attrs(gid) == {"only": "1"}
    server.set_group_attrs(gid, {"only": "1", "two": "2"})
    result = await run_cli("attr", "delete", "--group", gid, "two", env=env)
    assert result.rc == 0 and result.records() == [
        {"group": gid, "operation": "delete", "ok": True}
    ]
    assert server.group_attrs(gid) == {"only": "1"}
    assert (await run_cli("attr", "clear", "--group", gid, env=env)).rc == 0
    assert server.group_attrs(gid) == {}


async def test_counter_delete_some_and_all(server: FakeTimServer) -> None:
    gid = server.create_group()
    server.set_group_counters(gid, {"a": 1, "b": 2, "c": 3})
    env = cli_env(server)
    assert (await run_cli("counter", "delete", "--group", gid, "a", env=env)).rc == 0
    assert server.group_counters(gid) == {"b": 2, "c": 3}
    result = await run_cli("counter", "delete", "--group", gid, env=env)
    assert result.rc == 0 and result.records()[0]["deleted"] == "all"
    assert server.group_counters(gid) == {}


async def test_call_any_command_with_a_body_from_a_flag_or_stdin(server: FakeTimServer) -> None:
    gid, seq = message(server, pairs=4)
    env = cli_env(server)
    body = json.dumps({"GroupId": gid, "MsgSeq": seq})
    api = "openim_msg_ext_http_svc/group_get_key_values"
    for extra, stdin in ((["--body", body], None), (["--body", "-"], body.encode())):
        result = await run_cli("call", api, *extra, env=env, stdin=stdin)
        assert result.rc == 0, result.err
        (answer,) = result.records()
        assert answer["CompleteFlag"] == 1 and len(answer["ExtensionList"]) == 4


async def test_call_not_idempotent_is_never_resent(server: FakeTimServer) -> None:
    gid, seq = message(server)
    env = cli_env(server)
    body = json.dumps(
        {"GroupId": gid, "MsgSeq": seq, "OperateType": 1,
         "ExtensionList": [{"Key": "x", "Value": "1", "Seq": 0}]}
    )  # fmt: skip
    server.faults.script(EXT_SET, [Fault.DROP_AFTER_APPLY])
    result = await run_cli("call", EXT_SET, "--body", body, "--not-idempotent", env=env)
    assert result.rc == 1 and "Traceback" not in result.err
    assert len(server.requests_for(EXT_SET)) == 1
    server.faults.script(EXT_SET, [Fault.DROP_AFTER_APPLY])
    result = await run_cli("call", EXT_SET, "--body", body, env=env)
    assert result.rc == 0, result.err
    assert len(server.requests_for(EXT_SET)) == 3  # the dropped one was resent


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ext", "set", "--group", "G", "--msg-seq", "1", "a=1", "a=2"], "key 'a'"),
        (["ext", "set", "--group", "G", "--msg-seq", "1", "novalue"], "KEY=VALUE"),
        (["ext", "set", "--group", "G", "--msg-seq", "1", "k=" + "v" * 1001], "values"),
        (["ext", "set", "--group", "G", "a=1"], "--msg-seq"),
        (["ext", "delete", "--to", "bob", "--msg-key", "K", "x", "x"], "key 'x'"),
        (["attr", "modify", "--group", "G", "t=1", "t=2"], "attribute 't'"),
        (["counter", "delete", "--group", "G", "a", "a"], "counter 'a'"),
        (["call", "svc/cmd", "--body", "{nope"], "--body"),
        (["call", "svc/cmd", "--body", "[1]"], "--body"),
        (["call", "no-slash", "--body", "{}"], "SERVICE/COMMAND"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument_and_send_nothing(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (``main(argv)``); the address is a closed port, so a request sent by mistake
    would end in exit 1 (connection refused), not 2."""
    for name in list(os.environ):
        if name.startswith("TIM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TIM_SDKAPPID", "1400000000")
    monkeypatch.setenv("TIM_SECRET_KEY", "k" * 32)
    monkeypatch.setenv("TIM_BASE_URL", "http://127.0.0.1:9")
    try:
        code = main([*args, "--max-retries", "0"])
    except SystemExit as exc:  # argparse's own errors exit through SystemExit
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if not line.startswith(("usage", " "))]
    assert len(lines) == 1, captured.err  # one line naming the argument (plus argparse's usage)


# =========================================================================== flags and variables


async def test_a_flag_wins_over_its_variable_for_every_connection_option(
    server: FakeTimServer,
) -> None:
    gid = server.create_group()
    server.set_group_attrs(gid, {"t": "1"})
    good = cli_env(server)
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"TIM_SDKAPPID": "1234"}, ["--sdkappid", str(server.sdkappid)]),
        ({"TIM_IDENTIFIER": "not-the-admin"}, ["--identifier", server.admin]),
        ({"TIM_SECRET_KEY": "wrong-key-" + "x" * 20}, ["--secret-key", server.secret_key]),
        ({"TIM_BASE_URL": "http://127.0.0.1:9"}, ["--base-url", server.base_url]),
        ({"TIM_REGION": "atlantis"}, ["--region", "singapore"]),
    ]

    async def case(variable: dict[str, str], flags: list[str]) -> None:
        env = {**good, **variable}
        # the variable alone is bad (the command fails) ...
        alone = await run_cli("attr", "get", "--group", gid, "--max-retries", "0", env=env)
        assert alone.rc != 0, variable
        # ... and the flag given beside it wins
        both = await run_cli("attr", "get", "--group", gid, *flags, env=env)
        assert both.rc == 0, (variable, both.err)
        assert both.records()[0]["attrs"] == {"t": "1"}

    await asyncio.gather(*(case(variable, flags) for variable, flags in cases))
    # the UserSig: a bad TIM_USERSIG loses against --usersig
    env = {k: v for k, v in good.items() if k != "TIM_SECRET_KEY"}
    env["TIM_USERSIG"] = "bad-usersig"
    alone = await run_cli("attr", "get", "--group", gid, "--max-retries", "0", env=env)
    assert alone.rc != 0
    both = await run_cli("attr", "get", "--group", gid, "--usersig", server.usersig(), env=env,
                         secrets=[server.usersig()])  # fmt: skip
    assert both.rc == 0, both.err


# =========================================================================== --redis-url


async def test_redis_url_shares_one_budget_between_two_processes() -> None:
    rate = 10
    async with FakeTimServer(rate_limit=None, seed=2) as server:
        gid = server.create_group()
        seqs = [server.send_group_msg(gid) for _ in range(2 * rate)]
        lines = "".join(f"{gid},{seq}\n" for seq in seqs).encode()
        with redis_server() as redis:
            env = cli_env(server)
            args = ("ext", "pull-bulk", "--rate-limit", str(rate), "--concurrency", "4")
            # the flag wins over a dead TIM_REDIS_URL
            env_dead = {**env, "TIM_REDIS_URL": "redis://127.0.0.1:9/0"}
            first, second = await asyncio.gather(
                run_cli(*args, "--redis-url", redis.url, env=env_dead, stdin=lines),
                run_cli(*args, env={**env, "TIM_REDIS_URL": redis.url}, stdin=lines),
            )
        for result in (first, second):
            assert result.rc == 0, result.err
            assert len(result.records()) == len(seqs)
        arrivals = sorted(r.time for r in server.requests)
        assert len(arrivals) == 4 * rate
        # one budget: the emulator never saw more than `rate` calls in a sliding second
        assert max_in_window(arrivals) <= rate


async def test_redis_url_without_the_extra_exits_2_with_the_install_command(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    shadow = tmp_path / "redis"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no redis here')\n")
    env = cli_env(server)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    result = await run_cli(
        "attr", "get", "--group", "G", "--redis-url", "redis://127.0.0.1:6379/0", env=env
    )
    assert result.rc == 2
    assert "pip install 'tim-async[redis]'" in result.err
    assert server.requests == []


# =========================================================================== the rate shown


async def test_a_tiny_run_never_shows_a_rate_above_the_limit(server: FakeTimServer) -> None:
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(6)]
    lines = "".join(f"{gid},{seq}\n" for seq in seqs).encode()
    result = await run_cli(
        "ext", "pull-bulk", "--rate-limit", "4", env=cli_env(server), stdin=lines
    )
    assert result.rc == 0, result.err
    found = re.search(r"busiest second (\d+) calls per command, limit 4/s", result.err)
    assert found, result.err
    assert 1 <= int(found.group(1)) <= 4
    assert "calls/s" not in result.err  # no calls-over-elapsed figure for a short run


# =========================================================================== stdin and stdout


async def test_stdin_from_dev_null_is_zero_targets(server: FakeTimServer) -> None:
    with open(os.devnull, "rb") as devnull:  # noqa: ASYNC230 - a device, opened at once
        result = await run_fds(
            "ext", "pull-bulk", env=cli_env(server), stdin=devnull, stdout=asyncio.subprocess.PIPE
        )
    assert result.rc == 0, result.err
    assert result.out == "" and "0 target(s)" in result.err


async def test_stdin_from_dev_zero_is_a_clear_error(server: FakeTimServer) -> None:
    with open("/dev/zero", "rb") as zero:  # noqa: ASYNC230 - a device, opened at once
        result = await run_fds(
            "ext", "pull-bulk", env=cli_env(server), stdin=zero, stdout=asyncio.subprocess.PIPE
        )
    assert result.rc == 2
    assert "stdin line 1: line is longer than" in result.err
    assert server.requests == []


async def test_a_superscript_digit_is_a_line_error(server: FakeTimServer) -> None:
    gid, seq = message(server)
    # superscript two and Arabic-Indic one pass str.isdigit() but are not ASCII digits
    for bad_line in (json.dumps({"group": gid, "msg_seq": "\u00b2"}), f"{gid},\u0661"):
        lines = f"{gid},{seq}\n{bad_line}\n".encode()
        result = await run_cli("ext", "pull-bulk", env=cli_env(server), stdin=lines)
        assert result.rc == 2, result.err
        assert "stdin line 2: msg_seq must be an integer" in result.err
        (bad,) = [line for line in result.err.splitlines() if "line 2" in line]
        assert bad.startswith("tim-async: error:")


@pytest.mark.parametrize(
    "command", [["attr", "get", "--group", "@G"], ["ext", "get", "--group", "@G", "--msg-seq", "1"]]
)
async def test_a_single_object_command_on_a_closed_stdout_exits_quietly(
    server: FakeTimServer, command: list[str]
) -> None:
    gid = server.create_group("@G")
    server.send_group_msg(gid)
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| true`: the reader is gone before anything is written
    try:
        result = await run_fds(
            *command, env=cli_env(server), stdin=asyncio.subprocess.DEVNULL, stdout=write_end
        )
    finally:
        os.close(write_end)
    assert result.rc == 1
    assert result.err == ""


@pytest.mark.parametrize("command", [["attr", "get", "--group", "@G"], ["ext", "pull-bulk"]])
async def test_a_write_error_other_than_a_closed_pipe_is_a_failure(
    server: FakeTimServer, command: list[str]
) -> None:
    gid = server.create_group("@G")
    seq = server.send_group_msg(gid)
    with open("/dev/full", "wb") as full:  # noqa: ASYNC230 - a device, opened at once
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tim_async", *command,
            stdin=asyncio.subprocess.PIPE, stdout=full, stderr=asyncio.subprocess.PIPE,
            env=cli_env(server),
        )  # fmt: skip
        _, err_b = await asyncio.wait_for(proc.communicate(f"{gid},{seq}\n".encode()), TIMEOUT)
    err = err_b.decode()
    assert proc.returncode == 1, err
    assert "No space left on device" in err and "Traceback" not in err


async def test_reading_targets_from_a_terminal_leaves_its_flags_alone(
    server: FakeTimServer,
) -> None:
    gid, seq = message(server)
    master, slave = pty.openpty()
    try:
        assert os.get_blocking(slave)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tim_async", "ext", "pull-bulk",
            stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=cli_env(server),
        )  # fmt: skip
        os.write(master, f"{gid},{seq}\n".encode())
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert json.loads(first)["msg_seq"] == seq
        # the child reads the terminal now: the shared open file description is still blocking
        assert os.get_blocking(slave)
        os.write(master, b"\x04")  # Ctrl-D: end of input
        _, err_b = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err_b.decode()
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_ctrl_c_while_waiting_for_a_line_from_a_terminal_exits_130(
    server: FakeTimServer,
) -> None:
    # The terminal is read by a thread that holds the stream until a line comes: closing the
    # input at the end of the run must not wait for it (it hung forever).
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tim_async", "ext", "pull-bulk",
            stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=cli_env(server),
        )  # fmt: skip
        assert proc.stderr is not None
        prompt = await asyncio.wait_for(proc.stderr.readline(), TIMEOUT)
        assert b"reading targets from the terminal" in prompt
        await asyncio.sleep(0.3)  # the reading thread is waiting for a line now
        proc.send_signal(signal.SIGINT)
        _, err_b = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 130, err_b.decode()
        assert b"interrupted" in err_b
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        os.close(slave)
