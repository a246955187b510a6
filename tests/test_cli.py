"""The ``tim-async`` command line, driven as a subprocess (``python -m tim_async``) against the
emulator running in the test's event loop (it serves requests while the test awaits the child).

Every run checks that the secret key never appears in the output and that no traceback is
printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest

from tim_async.cli import C2CTarget, GroupTarget, MalformedTargetError, parse_target_line
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

TIMEOUT = 60.0


@attrs.frozen
class Result:
    """What one CLI run produced."""

    rc: int
    out: str
    err: str

    def records(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines (every line must be a JSON object)."""
        records = [json.loads(line) for line in self.out.splitlines()]
        assert all(isinstance(r, dict) for r in records)
        return records


def cli_env(server: FakeTimServer | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: no TIM_* from outside; credentials of ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    if server is not None:
        env["TIM_SDKAPPID"] = str(server.sdkappid)
        env["TIM_SECRET_KEY"] = server.secret_key
        env["TIM_BASE_URL"] = server.base_url
    env.update(extra)
    return env


def _check_output(out: str, err: str, secrets: Sequence[str]) -> None:
    for secret in (TEST_SECRET_KEY, *secrets):
        assert secret not in out, "a secret was printed on stdout"
        assert secret not in err, "a secret was printed on stderr"
    assert "Traceback" not in err, err


async def run_cli(
    *args: str,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    secrets: Sequence[str] = (),
    seconds: float = TIMEOUT,
) -> Result:
    """Run ``python -m tim_async ARGS`` and collect its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(stdin), seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    out, err = out_b.decode(), err_b.decode()
    _check_output(out, err, secrets)
    assert proc.returncode is not None
    return Result(proc.returncode, out, err)


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    """An emulator without rate enforcement (the CLI runs use ``--rate-limit none``)."""
    async with FakeTimServer(rate_limit=None, seed=11) as srv:
        yield srv


def expected_items(pairs: Mapping[str, tuple[str, int]]) -> list[dict[str, Any]]:
    """The emulator's visible pairs as the CLI prints them."""
    return [{"key": k, "value": v, "seq": s} for k, (v, s) in pairs.items()]


def assert_group_record(server: FakeTimServer, record: Mapping[str, Any]) -> None:
    gid, seq = record["group"], record["msg_seq"]
    meta = server.group_extension_meta(gid, seq)
    assert record["items"] == expected_items(server.group_extensions(gid, seq))
    assert (record["latest_seq"], record["clear_seq"]) == (meta.latest_seq, meta.clear_seq)


def assert_c2c_record(
    server: FakeTimServer, record: Mapping[str, Any], sender: str, recipient: str
) -> None:
    key = record["msg_key"]
    meta = server.c2c_extension_meta(sender, recipient, key)
    assert record["items"] == expected_items(server.c2c_extensions(sender, recipient, key))
    assert (record["latest_seq"], record["clear_seq"]) == (meta.latest_seq, meta.clear_seq)


# =========================================================================== help


HELP_CASES = [
    ([], ["demo", "ext", "attr", "counter", "TIM_SECRET_KEY", "ps"]),
    (["demo"], ["--messages", "emulator"]),
    (["ext"], ["get", "pull-bulk"]),
    (["ext", "get"], ["--group", "--msg-seq", "--to", "--msg-key", "--from", "--sdkappid"]),
    (["ext", "pull-bulk"], ["TARGETS", "--concurrency", "malformed", "130", "--rate-limit"]),
    (["attr"], ["get"]),
    (["attr", "get"], ["--group", "--base-url"]),
    (["counter"], ["get", "update"]),
    (["counter", "get"], ["--group", "KEY"]),
    (["counter", "update"], ["--mode", "KEY=VALUE", "Increase"]),
]


@pytest.mark.parametrize(("command", "expected"), HELP_CASES, ids=lambda c: " ".join(c))
async def test_help_of_every_command(command: list[str], expected: list[str]) -> None:
    result = await run_cli(*command, "--help", env=cli_env())
    assert result.rc == 0
    assert result.out.startswith(f"usage: tim-async {' '.join(command)}".rstrip())
    for text in expected:
        assert text in result.out
    assert result.err == ""


async def test_no_command_prints_help_and_exits_2() -> None:
    result = await run_cli(env=cli_env())
    assert result.rc == 2
    assert "usage: tim-async" in result.err and "commands:" in result.err


# =========================================================================== demo


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the output"
    return found.group(1)


async def test_demo_runs_every_endpoint_and_bulk_pull_at_the_rate_limit() -> None:
    # 600 messages (the default 3,000 takes 16 s at 200/s; the size is not the point here)
    result = await run_cli("demo", "--messages", "600", env=cli_env(), seconds=60)
    assert result.rc == 0, result.out + result.err
    out = result.out
    for method in (
        "msg_ext.group_get_key_values",
        "msg_ext.iter_group_key_values",
        "msg_ext.get_key_values",
        "msg_ext.iter_key_values",
        "msg_ext.group_set_key_values",
        "msg_ext.set_key_values",
        "group_attr.get_group_attr",
        "group_attr.modify_group_attr",
        "group_attr.set_group_attr",
        "group_attr.delete_group_attr",
        "group_attr.clear_group_attr",
        "group_counter.get_group_counter",
        "group_counter.update_group_counter",
        "group_counter.delete_group_counter",
        "tim.call",
    ):
        assert f"[ok  ] {method}" in out
    assert "[FAIL]" not in out
    assert "every pulled list equals the emulator's state  (600 lists compared)" in out
    assert re.search(r"result: all \d+ checks passed", out)
    pages = int(_match(r"pages walked +([\d,]+)", out).replace(",", ""))
    assert pages > 600  # messages with more than 200 pairs took two pages
    assert re.search(r"errors retried +8 \(ErrorCode 10002: 4, HTTP 502: 4\)", out)
    rate = float(_match(r"achieved rate +([\d.]+) calls/s", out))
    # Never above the limit (how close it gets is a timing goal: benchmarks/bench_bulk.py).
    assert 0 < rate <= 200
    # stderr is not a terminal: no progress bar
    assert result.err == ""


# =========================================================================== single commands


@pytest.fixture
def showcase(server: FakeTimServer) -> dict[str, Any]:
    """A group with a two-page message, a cleared message, attributes, counters, and a
    one-to-one message."""
    gid = server.create_group("@TGS#CLISHOW")
    big = server.send_group_msg(gid)
    server.put_group_extensions(gid, big, {f"k{i:03d}": f"value {i}" for i in range(250)})
    server.delete_group_extensions(gid, big, ["k007"])
    cleared = server.send_group_msg(gid)
    server.put_group_extensions(gid, cleared, {f"old{i}": "x" for i in range(30)})
    server.clear_group_extensions(gid, cleared)
    server.put_group_extensions(gid, cleared, {"new": "ü ✓"})
    server.set_group_attrs(gid, {"topic": "launch", "lang": "en"})
    server.set_group_counters(gid, {"likes": 7, "views": 100, "shares": 0})
    key = server.send_c2c_msg("alice", "bob")
    server.put_c2c_extensions("alice", "bob", key, {f"r{i}": str(i) for i in range(210)})
    return {"gid": gid, "big": big, "cleared": cleared, "key": key}


async def test_ext_get_group_message_matches_emulator(
    server: FakeTimServer, showcase: dict[str, Any]
) -> None:
    gid = showcase["gid"]
    for seq in (showcase["big"], showcase["cleared"]):
        result = await run_cli(
            "ext", "get", "--group", gid, "--msg-seq", str(seq), env=cli_env(server)
        )
        assert result.rc == 0, result.err
        (record,) = result.records()
        assert (record["group"], record["msg_seq"]) == (gid, seq)
        assert_group_record(server, record)
    assert len(record["items"]) == 1 and record["clear_seq"] > 0  # the cleared message
    # the 250-pair message took two pages
    big_pulls = [r for r in server.requests_for("openim_msg_ext_http_svc/group_get_key_values")]
    assert sum(1 for r in big_pulls if r.body["MsgSeq"] == showcase["big"]) == 2


async def test_ext_get_c2c_message_with_and_without_sender(
    server: FakeTimServer, showcase: dict[str, Any]
) -> None:
    key = showcase["key"]
    for extra in (["--from", "alice"], []):
        result = await run_cli(
            "ext", "get", "--to", "bob", "--msg-key", key, *extra, env=cli_env(server)
        )
        assert result.rc == 0, result.err
        (record,) = result.records()
        assert (record["to"], record["msg_key"], record.get("from")) == (
            "bob",
            key,
            "alice" if extra else None,
        )
        assert len(record["items"]) == 210
        assert_c2c_record(server, record, "alice", "bob")


async def test_ext_get_missing_message_exits_1_with_the_server_code(
    server: FakeTimServer, showcase: dict[str, Any]
) -> None:
    result = await run_cli(
        "ext", "get", "--group", showcase["gid"], "--msg-seq", "999", env=cli_env(server)
    )
    assert result.rc == 1
    assert result.out == ""
    assert "ErrorCode 23004" in result.err


async def test_attr_get_matches_emulator_with_flags_and_usersig(
    server: FakeTimServer, showcase: dict[str, Any]
) -> None:
    usersig = server.usersig()
    # Everything by flag, credentials as a ready-made UserSig (never printed).
    result = await run_cli(
        "--sdkappid",
        str(server.sdkappid),
        "attr",
        "get",
        "--group",
        showcase["gid"],
        "--usersig",
        usersig,
        "--base-url",
        server.base_url,
        env=cli_env(),
        secrets=[usersig],
    )
    assert result.rc == 0, result.err
    assert result.records() == [
        {"group": showcase["gid"], "attrs": server.group_attrs(showcase["gid"])}
    ]
    assert server.group_attrs(showcase["gid"]) == {"topic": "launch", "lang": "en"}


async def test_counter_get_all_and_some(server: FakeTimServer, showcase: dict[str, Any]) -> None:
    gid = showcase["gid"]
    everything = await run_cli("counter", "get", "--group", gid, env=cli_env(server))
    assert everything.rc == 0, everything.err
    assert everything.records() == [{"group": gid, "counters": server.group_counters(gid)}]
    some = await run_cli("counter", "get", "--group", gid, "likes", "views", env=cli_env(server))
    assert some.records() == [{"group": gid, "counters": {"likes": 7, "views": 100}}]


@pytest.mark.parametrize(
    ("mode", "pairs", "printed", "stored"),
    [
        ("Increase", ["likes=5", "new=2"], {"likes": 12, "new": 2}, {"likes": 12, "new": 2}),
        ("decrease", ["views=1"], {"views": 99}, {"views": 99}),
        ("Set", ["shares=-4"], {"shares": -4}, {"shares": -4}),
    ],
)
async def test_counter_update_matches_emulator(
    server: FakeTimServer,
    showcase: dict[str, Any],
    mode: str,
    pairs: list[str],
    printed: dict[str, int],
    stored: dict[str, int],
) -> None:
    gid = showcase["gid"]
    result = await run_cli(
        "counter", "update", "--group", gid, "--mode", mode, *pairs, env=cli_env(server)
    )
    assert result.rc == 0, result.err
    (record,) = result.records()
    assert record == {"group": gid, "mode": mode.capitalize(), "counters": printed}
    counters = server.group_counters(gid)
    assert {k: counters[k] for k in stored} == stored


# =========================================================================== bulk pull


def _seed_bulk(server: FakeTimServer) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """1,090 targets: 1,000 group messages (some with more than 200 pairs, some cleared, some
    empty), 60 one-to-one messages, 30 missing messages. Returns the input lines and what is
    expected for each input line number."""
    import random

    rng = random.Random(5)
    lines = ["group,msg_seq", "# targets for the CLI test", ""]
    expected: dict[int, dict[str, Any]] = {}

    def add(line: str, want: dict[str, Any]) -> None:
        lines.append(line)
        expected[len(lines)] = want
        if rng.random() < 0.05:
            lines.append("")

    gids = [server.create_group(), server.create_group()]
    for i in range(1000):
        gid = gids[i % 2]
        seq = server.send_group_msg(gid)
        count = rng.randint(201, 300) if i % 40 == 0 else rng.randint(0, 30)
        if count:
            server.put_group_extensions(gid, seq, {f"k{j}": f"{seq}/{j}" for j in range(count)})
        if i % 90 == 1:
            server.clear_group_extensions(gid, seq)
            server.put_group_extensions(gid, seq, {"after": "clear"})
        line = json.dumps({"group": gid, "msg_seq": seq}) if i % 3 else f"{gid},{seq}"
        add(line, {"kind": "group", "group": gid, "msg_seq": seq})
    for i in range(60):
        sender, recipient = f"user{i}", f"peer{i}"
        key = server.send_c2c_msg(sender, recipient)
        server.put_c2c_extensions(sender, recipient, key, {f"c{j}": str(j) for j in range(i)})
        if i % 2:
            line = json.dumps({"to": recipient, "msg_key": key, "from": sender})
        else:
            line = f"{recipient},{key},{sender}" if i % 4 else f"{recipient},{key}"
        add(line, {"kind": "c2c", "from": sender, "to": recipient, "msg_key": key})
    for i in range(25):
        gid = gids[i % 2]
        add(f"{gid},{100000 + i}", {"kind": "missing"})
    for i in range(5):
        add(json.dumps({"to": "nobody", "msg_key": f"1_{i}_2"}), {"kind": "missing"})
    return lines, expected


def _check_bulk_records(
    server: FakeTimServer, records: list[dict[str, Any]], expected: dict[int, dict[str, Any]]
) -> None:
    assert sorted(r["line"] for r in records) == sorted(expected)  # each target exactly once
    for record in records:
        want = expected[record["line"]]
        if want["kind"] == "missing":
            assert record["error"]["code"] == 23004
            assert record["error"]["type"] == "TimNotFoundError"
            assert "does not exist" in record["error"]["message"]
            assert "items" not in record
        elif want["kind"] == "group":
            assert "error" not in record, record
            assert (record["group"], record["msg_seq"]) == (want["group"], want["msg_seq"])
            assert_group_record(server, record)
        else:
            assert "error" not in record, record
            assert (record["to"], record["msg_key"]) == (want["to"], want["msg_key"])
            assert_c2c_record(server, record, want["from"], want["to"])


async def test_pull_bulk_file_of_1090_targets_matches_emulator(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    lines, expected = _seed_bulk(server)
    targets = tmp_path / "targets.csv"
    targets.write_text("\n".join(lines) + "\n")
    server.clear_log()
    result = await run_cli(
        "ext", "pull-bulk", str(targets), "--rate-limit", "none", env=cli_env(server)
    )
    assert result.rc == 1  # 30 targets failed
    records = result.records()
    assert len(records) == 1090
    _check_bulk_records(server, records, expected)
    # Messages with more than 200 pairs took two pages, the others one.
    pulls = server.requests_for("openim_msg_ext_http_svc/group_get_key_values")
    assert len(pulls) == 1000 + 25 + sum(1 for r in records if len(r.get("items", ())) > 200)
    # stderr: the summary only (not a terminal: no progress line)
    assert "\r" not in result.err
    assert "1,090 target(s): 1,060 ok, 30 failed" in result.err


async def test_pull_bulk_from_stdin_stream(server: FakeTimServer) -> None:
    lines, expected = _seed_bulk(server)
    # 150 lines of the same input, fed through a pipe ("-" = stdin)
    head = lines[:150]
    wanted = {n: w for n, w in expected.items() if n <= 150}
    result = await run_cli(
        "ext",
        "pull-bulk",
        "-",
        "--rate-limit",
        "none",
        "--concurrency",
        "7",
        "--quiet",
        env=cli_env(server),
        stdin=("\n".join(head) + "\n").encode(),
    )
    assert result.rc == 0, result.err
    assert result.err == ""  # --quiet
    _check_bulk_records(server, result.records(), wanted)


async def test_pull_bulk_keeps_at_most_concurrency_targets_in_flight(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(40)]
    for seq in seqs:
        server.put_group_extensions(gid, seq, {"k": str(seq)})
    targets = tmp_path / "t.jsonl"
    targets.write_text("".join(json.dumps({"group": gid, "msg_seq": s}) + "\n" for s in seqs))
    # Every answer takes 100 ms: with 4 workers, no 5 requests can arrive within 100 ms.
    command = "openim_msg_ext_http_svc/group_get_key_values"
    server.faults.script(command, [Fault.slow(0.1)] * 40)
    result = await run_cli(
        "ext", "pull-bulk", str(targets), "--concurrency", "4", env=cli_env(server)
    )
    assert result.rc == 0, result.err
    records = result.records()
    assert sorted(r["msg_seq"] for r in records) == seqs
    for record in records:
        assert record["items"] == [{"key": "k", "value": str(record["msg_seq"]), "seq": 1}]
    times = sorted(r.time for r in server.requests_for(command))
    assert len(times) == 40
    assert min(later - earlier for earlier, later in zip(times, times[4:], strict=False)) >= 0.09


# =========================================================================== bad input


MALFORMED = [
    ('{"group": "G"}', "a group target needs 'msg_seq'"),
    ('{"group": "G", "msg_seq": -1}', "msg_seq must be an integer in 0..4294967295"),
    ('{"group": "G", "msg_seq": true}', "msg_seq must be an integer in 0..4294967295"),
    ('{"group": "G", "msg_seq": 1', "invalid JSON"),
    ('{"group": "", "msg_seq": 1}', "'group' must be a non-empty string, got \"\""),
    ('{"group": "G", "to": "A", "msg_seq": 1}', "give either 'group' or 'to', not both"),
    ('{"to": "A"}', "'msg_key' must be a non-empty string, got nothing"),
    ('{"to": "A", "msg_key": "K", "from": 5}', "'from' must be a non-empty string, got 5"),
    ('{"msg_seq": 4}', "needs 'group' and 'msg_seq', or 'to' and 'msg_key'"),
    ("[1, 2]", "a JSON target must be an object"),
    ("G,5,6,7", "got 4 field(s)"),
    ("just-one-field", "got 1 field(s)"),
    ("G,", "empty field"),
    ("G,99999999999", "msg_seq must be an integer"),
    ("G,1.5", "msg_seq must be an integer"),
    ('"unterminated,5', "invalid CSV"),
    ("group,msg_seq", "a header row is only allowed as the first line"),
    (b"G,\xff\xfe", "not valid UTF-8"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED)
def test_parse_target_line_names_the_problem_and_line(bad: str | bytes, problem: str) -> None:
    with pytest.raises(MalformedTargetError) as caught:
        parse_target_line(bad, 17, source="t.csv")
    assert str(caught.value).startswith("t.csv line 17: ")
    assert problem in str(caught.value)
    assert caught.value.line == 17


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ('{"group": "G", "msg_seq": 5}', GroupTarget("G", 5, 3)),
        ('  {"group": "G", "msg_seq": "5", "items": []} ', GroupTarget("G", 5, 3)),
        ('{"to": "A", "msg_key": "1_2_3", "from": "B"}', C2CTarget("A", "1_2_3", "B", 3)),
        ('{"to": "A", "msg_key": "K", "from": null, "error": {}}', C2CTarget("A", "K", None, 3)),
        ("G,5", GroupTarget("G", 5, 3)),
        ('"@TGS#a,b", 4294967295\r\n', GroupTarget("@TGS#a,b", 4294967295, 3)),
        ("A,1_2_3", C2CTarget("A", "1_2_3", None, 3)),
        ("A,1_2_3,B", C2CTarget("A", "1_2_3", "B", 3)),
        ("A,1_2_3,", C2CTarget("A", "1_2_3", None, 3)),
        ("", None),
        ("   ", None),
        ("# comment", None),
    ],
)
def test_parse_target_line_accepts_json_and_csv(line: str, target: object) -> None:
    assert parse_target_line(line, 3) == target


@pytest.mark.parametrize("header", ["group,msg_seq", "to,msg_key,from", "\ufeffGroup, MSG_SEQ"])
def test_parse_target_line_skips_a_header_only_when_allowed(header: str) -> None:
    assert parse_target_line(header, 1, header_allowed=True) is None
    with pytest.raises(MalformedTargetError, match="header"):
        parse_target_line(header, 2)


SUBPROCESS_MALFORMED = [MALFORMED[0], MALFORMED[10], MALFORMED[16]]


@pytest.mark.parametrize(("bad", "problem"), SUBPROCESS_MALFORMED)
async def test_malformed_line_in_file_exits_2_before_any_call(
    server: FakeTimServer, tmp_path: pathlib.Path, bad: str, problem: str
) -> None:
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    path = tmp_path / "targets.txt"
    path.write_text(f"group,msg_seq\n{gid},{seq}\n\n{bad}\n{gid},{seq}\n")
    server.clear_log()
    result = await run_cli("ext", "pull-bulk", str(path), env=cli_env(server))
    assert result.rc == 2
    assert result.out == ""
    assert result.err.startswith(f"tim-async: error: {path} line 4: ")
    assert problem in result.err
    assert result.err.count("\n") == 1  # one message
    assert server.requests == []  # the file is checked before the first call


async def test_malformed_line_on_stdin_stops_at_that_line(server: FakeTimServer) -> None:
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(3)]
    text = "".join(f"{gid},{s}\n" for s in seqs) + "not a target\nG,1\n"
    result = await run_cli("ext", "pull-bulk", "--quiet", env=cli_env(server), stdin=text.encode())
    assert result.rc == 2
    assert "tim-async: error: stdin line 4: expected a JSON object or a CSV row" in result.err
    # the targets read before the malformed line were pulled and written
    assert sorted(r["msg_seq"] for r in result.records()) == seqs


@pytest.mark.parametrize("kind", ["missing", "directory"])
async def test_unreadable_targets_file_exits_2(
    server: FakeTimServer, tmp_path: pathlib.Path, kind: str
) -> None:
    path = tmp_path / "nope.txt" if kind == "missing" else tmp_path
    result = await run_cli("ext", "pull-bulk", str(path), env=cli_env(server))
    assert result.rc == 2
    reason = "No such file or directory" if kind == "missing" else "directory"
    assert result.err.startswith(f"tim-async: error: cannot read {path}: ")
    assert reason in result.err
    assert result.out == ""


BAD_CONFIG = [
    # (args, environment changes (None = unset), expected message)
    (["attr", "get", "--group", "G"], {"TIM_SECRET_KEY": None}, "no credentials: set "),
    (["ext", "pull-bulk", "-"], {"TIM_SECRET_KEY": None}, "no credentials: set "),
    (["attr", "get", "--group", "G"], {"TIM_SDKAPPID": None}, "no SDKAppID: set TIM_SDKAPPID"),
    (["attr", "get", "--group", "G"], {"TIM_SDKAPPID": "abc"}, "SDKAppID must be a positive"),
    (["attr", "get", "--group", "G"], {"TIM_USERSIG": "x"}, "give only one of TIM_SECRET_KEY"),
    (["attr", "get", "--group", "G", "--region", "mars"], {}, "unknown region 'mars'"),
    (["attr", "get", "--group", "G"], {"TIM_BASE_URL": "ftp://x"}, "must start with http://"),
    (["attr", "get", "--group", "G", "--rate-limit", "fast"], {}, "argument --rate-limit"),
    (["attr", "get", "--group", "G", "--timeout", "0"], {}, "argument --timeout"),
    (["attr", "get", "--group", "G", "--max-retries", "-1"], {}, "argument --max-retries"),
    (["ext", "pull-bulk", "--concurrency", "0"], {}, "argument --concurrency"),
    (["ext", "get", "--group", "G"], {}, "--group needs --msg-seq"),
    (["ext", "get", "--group", "G", "--msg-seq", "1", "--to", "A"], {}, "either --group"),
    (["counter", "update", "--group", "G", "--mode", "Set", "a=b"], {}, "must be an integer"),
    (["counter", "update", "--group", "G", "--mode", "Set", "ab"], {}, "expected KEY=VALUE"),
    (["counter", "update", "--group", "G", "--mode", "Double", "a=1"], {}, "argument --mode"),
    (["counter", "get", "--group", "G", *[f"k{i}" for i in range(21)]], {}, "keys: "),
]


@pytest.mark.parametrize(("args", "changes", "message"), BAD_CONFIG)
async def test_bad_configuration_exits_2_with_one_clear_message(
    server: FakeTimServer, args: list[str], changes: dict[str, str | None], message: str
) -> None:
    env = cli_env(server)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    server.clear_log()
    result = await run_cli(*args, env=env, stdin=b"")
    assert result.rc == 2, result.err
    assert message in result.err
    assert result.out == ""
    assert server.requests == []  # refused before anything was sent


# =========================================================================== interrupt, progress


@contextlib.contextmanager
def _sigint_default() -> Iterator[None]:
    """Children inherit an ignored SIGINT (a test run started in the background): make sure
    the CLI child starts with the default disposition, as it would in a terminal."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


async def test_sigint_during_bulk_pull_exits_130_with_valid_output(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(400)]
    for seq in seqs:
        server.put_group_extensions(gid, seq, {"a": "1", "b": str(seq)})
    path = tmp_path / "targets.csv"
    path.write_text("".join(f"{gid},{s}\n" for s in seqs))
    with _sigint_default():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tim_async",
            "ext",
            "pull-bulk",
            str(path),
            "--rate-limit",
            "40",
            "--concurrency",
            "4",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(server),
        )
    assert proc.stdout is not None and proc.stderr is not None
    first: list[bytes] = []
    try:
        while len(first) < 5:  # wait until some results were streamed
            first.append(await asyncio.wait_for(proc.stdout.readline(), 20))
        proc.send_signal(signal.SIGINT)
        rest, err_b = await asyncio.wait_for(
            asyncio.gather(proc.stdout.read(), proc.stderr.read()), 20
        )
        rc = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = b"".join(first).decode() + rest.decode(), err_b.decode()
    _check_output(out, err, ())
    assert rc == 130
    assert err == "tim-async: interrupted\n"
    assert out.endswith("\n")
    records = [json.loads(line) for line in out.splitlines()]
    assert 5 <= len(records) < 400  # stopped early
    assert len({r["msg_seq"] for r in records}) == len(records)
    for record in records:
        assert_group_record(server, record)


async def test_progress_is_drawn_when_stderr_is_a_terminal(
    server: FakeTimServer, tmp_path: pathlib.Path
) -> None:
    gid = server.create_group()
    seqs = [server.send_group_msg(gid) for _ in range(120)]
    path = tmp_path / "targets.csv"
    path.write_text("".join(f"{gid},{s}\n" for s in seqs))
    master, slave = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tim_async",
            "ext",
            "pull-bulk",
            str(path),
            "--rate-limit",
            "100",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=slave,
            env=cli_env(server),
        )
        os.close(slave)
        slave = -1
        out_b, _ = await asyncio.wait_for(proc.communicate(), 30)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    err = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert len(out_b.decode().splitlines()) == 120
    assert "/120" in err and "/100 calls/s" in err and "ETA" in err
    shown = [int(rate) for rate in re.findall(r"(\d+)/100 calls/s", err)]
    assert shown and max(shown) <= 100  # never a rate above the limit (issue 11 item 7)
    assert "\r\x1b[K" in err  # redrawn in place, erased at the end
    assert "120 target(s): 120 ok, 0 failed" in err
