"""The standalone emulator (``python -m tim_async.testing``) as a new user meets it: it says
how to reach it on stderr, and the README's command-line examples succeed against it with the
printed exports."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from tim_async import TimClient
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer
from tim_async.testing.__main__ import seed

README = Path(__file__).resolve().parent.parent / "README.md"
BANNER_END = "Stop it with Ctrl-C."


class Standalone:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, banner: str) -> None:
        self.proc = proc
        self.url = url
        self.banner = banner

    @property
    def exports(self) -> dict[str, str]:
        """The variables of the banner's ``export`` line, parsed as a shell would."""
        lines = [line for line in self.banner.splitlines() if line.startswith("export ")]
        assert len(lines) == 1, self.banner
        words = shlex.split(lines[0])[1:]
        return dict(word.split("=", 1) for word in words)


@asynccontextmanager
async def standalone(*args: str) -> AsyncIterator[Standalone]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async.testing",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        banner: list[str] = []
        while not banner or banner[-1] != BANNER_END:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "stderr ended before the banner did: " + "\n".join(banner)
            banner.append(line.decode().rstrip("\n"))
        yield Standalone(proc, url, "\n".join(banner))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert "emulator stopped" in (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def cli(argv: Sequence[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -m tim_async ARGV`` with only ``env`` as its TIM_* environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async",
        *argv,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def readme_section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def readme_cli_examples() -> list[tuple[list[str], Any]]:
    """Each ``$ tim-async ...`` line of the README's "Commands" section with the JSON it shows
    (None when it shows none). ``[a b]`` (optional arguments) is given as ``a b``."""
    examples: list[tuple[list[str], Any]] = []
    section = readme_section("### Commands")
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ tim-async "):
                argv = shlex.split(line[len("$ tim-async ") :].replace("[", "").replace("]", ""))
                examples.append((argv, None))
            elif line.startswith("{") and examples:
                examples[-1] = (examples[-1][0], orjson.loads(line))
    return examples


# --------------------------------------------------------------------------- the banner


async def test_banner_says_how_to_reach_it_and_what_was_seeded() -> None:
    async with standalone("--c2c-messages", "2", "--group-messages", "2", "--seed", "4") as emu:
        banner = emu.banner
        assert f"SDKAppID    {TEST_SDKAPPID}" in banner
        assert f"admin       {TEST_ADMIN}" in banner
        assert TEST_SECRET_KEY in banner  # the public test key: printed on purpose
        assert emu.exports == {
            "TIM_SDKAPPID": str(TEST_SDKAPPID),
            "TIM_IDENTIFIER": TEST_ADMIN,
            "TIM_SECRET_KEY": TEST_SECRET_KEY,
            "TIM_BASE_URL": emu.url,
        }
        # the README's example data, then the flags' data, each named so it can be pasted
        assert "group @TGS#1ABC (Public): msg seqs 158, 159" in banner
        assert "alice -> bob: msg keys 1847913567_1_1700000000, 1847913567_2_1700000000" in banner
        assert "group @TGS#SEEDGROUP (Public): msg seqs 1..2" in banner
        keys = re.findall(
            r"\b\d+_\d+_\d+\b", banner.split("group @TGS#SEEDGROUP")[1].split("Try:")[0]
        )
        assert len(keys) == 2
        # the printed keys are real: the SDK reads their extensions
        async with TimClient(TEST_SDKAPPID, secret_key=TEST_SECRET_KEY, base_url=emu.url) as tim:
            for key in keys:
                ext = await tim.msg_ext.get_key_values("bob", key, from_account="alice")
                assert len(ext) >= 1


async def test_a_custom_secret_key_is_never_printed() -> None:
    key = "0123456789abcdef" * 4
    async with standalone("--secret-key", key, "--no-examples", "--admin", "ops") as emu:
        assert key not in emu.banner
        assert key[:8] not in emu.banner
        assert "TIM_SECRET_KEY" not in emu.exports
        assert emu.exports["TIM_IDENTIFIER"] == "ops"
        assert "Seeded" not in emu.banner  # --no-examples: nothing
        async with TimClient(
            TEST_SDKAPPID, identifier="ops", secret_key=key, base_url=emu.url
        ) as tim:
            # the key is the one the emulator checks UserSigs against (else 70009)
            info = await tim.call("group_open_http_svc/get_group_info", {"GroupIdList": ["@X"]})
            assert info["GroupInfo"][0]["ErrorCode"] == 10010


# --------------------------------------------------------------------------- the README's CLI


async def test_every_readme_cli_example_succeeds_with_the_printed_exports(
    tmp_path: Path,
) -> None:
    examples = readme_cli_examples()
    commands = {tuple(argv[:2]) for argv, _ in examples}
    assert {("ext", "get"), ("attr", "get"), ("counter", "get"), ("counter", "update")} <= commands
    async with standalone() as emu:
        env = emu.exports
        # The banner's "Try:" lines, run by a shell as pasted. A README example that is also a
        # "Try:" line runs once, through the shell, and is checked against both.
        tries = emu.banner.split("\nTry:\n")[1].split("\nStop it")[0].splitlines()
        assert len(tries) >= 6
        by_argv = {tuple(shlex.split(line.strip())[1:]): line for line in tries}
        base = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
        cli_cmd = shlex.quote(sys.executable) + " -m tim_async"

        async def shell(line: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                line.strip().replace("tim-async", cli_cmd),
                env={**base, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, (line, err_b.decode())
            for record in out_b.decode().splitlines():
                assert "error" not in orjson.loads(record), line
            return out_b.decode()

        async def example(argv: list[str], shown: Any) -> None:
            line = by_argv.pop(tuple(argv), None)
            if line is not None:
                out = await shell(line)
            else:
                code, out, err = await cli(argv, env)
                assert code == 0, (argv, err)
            answer = orjson.loads(out)
            if shown is not None:
                assert answer == shown, argv
            elif argv[:2] == ["ext", "get"]:
                assert answer["items"], argv

        async def pull_bulk() -> None:
            # the bulk pull's sample targets, as a file
            targets = re.search(r"```text\n(.*?)```", readme_section("### Bulk pull"), re.S)
            assert targets is not None
            path = tmp_path / "targets.csv"
            path.write_text(targets.group(1), encoding="utf-8")
            code, out, err = await cli(["ext", "pull-bulk", str(path), "--quiet"], env)
            assert code == 0, err
            records = [orjson.loads(line) for line in out.splitlines()]
            assert len(records) == len([t for t in targets.group(1).splitlines()[1:] if t.strip()])
            assert all("error" not in r and r["items"] for r in records), records

        async def counters_in_readme_order() -> None:
            # in README order: `counter update` follows `counter get` (its output shows both)
            for argv, shown in examples:
                if argv[0] == "counter":
                    await example(argv, shown)

        # Independent commands side by side; the counter examples in order, before any
        # "Try:" line that changes the counters.
        await asyncio.gather(
            counters_in_readme_order(),
            pull_bulk(),
            *(example(argv, shown) for argv, shown in examples if argv[0] != "counter"),
        )
        assert len(by_argv) < len(tries)  # some examples were "Try:" lines too
        await asyncio.gather(*(shell(line) for line in by_argv.values()))


# --------------------------------------------------------------------------- seeding flags


async def test_group_messages_are_the_seeded_ones() -> None:
    async with standalone(
        "--rate-limit",
        "none",
        "--page-size",
        "50",
        "--group-messages",
        "3",
        "--keys-per-msg-max",
        "120",
        "--seed",
        "1",
    ) as emu:
        expected = FakeTimServer(seed=1)
        seed(expected, "@TGS#SEEDGROUP", 3, 120)
        async with TimClient(TEST_SDKAPPID, secret_key=TEST_SECRET_KEY, base_url=emu.url) as tim:
            for msg_seq in (1, 2, 3):
                full = list(expected.group_extensions("@TGS#SEEDGROUP", msg_seq).items())
                async for page in tim.msg_ext.iter_group_key_values("@TGS#SEEDGROUP", msg_seq):
                    got = [(i.key, (i.value, i.seq)) for i in page.items]
                    assert got == full[:50]
                    # CompleteFlag is 1 exactly when the first page held every pair
                    assert page.complete == (len(full) <= 50)
                    break


async def test_seeding_attrs_counters_and_group_type() -> None:
    async with standalone(
        "--no-examples",
        "--group-id",
        "@TGS#MINE",
        "--group-type",
        "Work",
        "--group-attr",
        "topic=launch",
        "--group-attr",
        "lang=en",
        "--group-counter",
        "likes=7",
    ) as emu:
        assert "group @TGS#MINE (Work): attributes topic, lang; counters likes" in emu.banner
        async with TimClient(TEST_SDKAPPID, secret_key=TEST_SECRET_KEY, base_url=emu.url) as tim:
            assert await tim.group_attr.get_group_attr("@TGS#MINE") == {
                "topic": "launch",
                "lang": "en",
            }
            assert await tim.group_counter.get_group_counter("@TGS#MINE") == {"likes": 7}
            info = await tim.call(
                "group_open_http_svc/get_group_info", {"GroupIdList": ["@TGS#MINE"]}
            )
            assert info["GroupInfo"][0]["Type"] == "Work"


async def test_seeding_refused_on_a_community_group_exits_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async.testing",
        "--port",
        "0",
        "--group-type",
        "Community",
        "--group-counter",
        "likes=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert out == b""
    assert "10007" in err.decode() and "Community" in err.decode()


async def test_seed_groups_still_works_but_says_it_is_deprecated() -> None:
    async with standalone("--no-examples", "--seed-groups", "2") as emu:
        assert "group @TGS#SEEDGROUP (Public): msg seqs 1..2" in emu.banner
        assert "--seed-groups is deprecated: use --group-messages" in emu.banner


async def test_help_describes_every_flag() -> None:
    code, out, _ = await run_module_help()
    assert code == 0
    flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", out, re.M))
    assert {
        "--group-messages",
        "--c2c-messages",
        "--group-attr",
        "--group-counter",
        "--group-type",
        "--no-examples",
    } <= flags
    for flag in flags - {"--help"}:
        # every flag line carries a description (text after the metavar)
        line = next(row for row in out.splitlines() if row.strip().startswith(flag))
        index = out.splitlines().index(line)
        described = len(line.split("  ")) > 1 and line.split("  ")[-1].strip()
        assert described or out.splitlines()[index + 1].startswith(" " * 20), flag


async def run_module_help() -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async.testing",
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
