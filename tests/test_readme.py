"""Every ```python block of README.md runs, against the emulator.

The convention (the README states it in an HTML comment at its top):

* Each ```python block is one test, named after the heading it sits under
  (``test_readme_block[quick-start]``; ``-2``, ``-3`` for more blocks under one heading).
* A block runs as written, in a fresh namespace. **Top-level ``await``** (also ``async for`` and
  ``async with``) is allowed: such a block runs as the body of a coroutine, and may use ``tim``
  without creating it — the harness then gives it an open client on the emulator, as the Quick
  start builds one. A block without top-level ``await`` runs as a script (it may call
  ``asyncio.run(main())`` itself). No other name is provided.
* **Credentials, explicitly:** while a block runs, ``tim_async.TimClient`` (also
  ``tim_async.client.TimClient``) is :class:`_EmulatorClient`, a subclass that keeps every
  argument the block gives except where it connects and the key: ``region``/``base_url`` become
  the emulator's URL and ``secret_key``/``usersig`` the emulator's test key. ``sdkappid`` and
  ``identifier`` stay as written; the emulator runs with the README's SDKAppID (1400000000) and
  admin (``administrator``), so a block written for another app fails here.
* The emulator is seeded with the ids the README uses (:func:`_seed`), fresh for each block.
* A block that defines ``test_*`` functions is a pytest example: it is written as a file into a
  temporary project with an empty ``pytest.ini`` (so pytest-asyncio runs in strict mode, as in a
  new user's project), and pytest runs that project in a subprocess (once for all such blocks);
  every test in the block's file must pass.
* A block that cannot run here is preceded by ``<!-- not run: REASON -->`` (visible in the
  README's source); its test is reported as skipped with that reason, never left out.
* :data:`AWAITING` lists blocks that fail until another change lands (strict xfail, so the entry
  must be removed when it does).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

import pytest

import tim_async
import tim_async.client
from tim_async import TimClient
from tim_async.testing import FakeTimServer
from tim_async.testing.redis_server import RedisServerNotFound, redis_server

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$", re.S)

#: block id -> what it waits for; run as ``xfail(strict=True)``: remove the entry once it passes.
AWAITING: dict[str, str] = {}

T = TypeVar("T")


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def _blocks() -> list[tuple[str, str, str | None]]:
    """(id, code, not-run reason) for every ```python block, in README order. The code is
    preceded by blank lines so that tracebacks give README.md's line numbers."""
    text = README.read_text(encoding="utf-8")
    blocks: list[tuple[str, str, str | None]] = []
    seen: dict[str, int] = {}
    heading = "top"
    pos = 0
    fences = r"^(#{1,6}) ([^\n]+)$|^```(\w*)\n(.*?)^```$"  # headings; fenced blocks, whole
    for match in re.finditer(fences, text, re.M | re.S):
        if match.group(1):
            heading = _slug(match.group(2))
            pos = match.end()
            continue
        if match.group(3) != "python":
            pos = match.end()
            continue
        seen[heading] = seen.get(heading, 0) + 1
        block_id = heading if seen[heading] == 1 else f"{heading}-{seen[heading]}"
        before = text[pos : match.start()].rstrip()
        marker = re.search(r"<!--[^<]*-->$", before)
        reason = None
        if marker and (not_run := NOT_RUN.match(marker.group(0))):
            reason = not_run.group(1)
        padding = "\n" * text.count("\n", 0, match.start(4))
        blocks.append((block_id, padding + match.group(4), reason))
        pos = match.end()
    return blocks


def _params() -> Iterator[Any]:
    for block_id, code, reason in _blocks():
        marks: list[Any] = []
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"README says: not run: {reason}"))
        elif block_id in AWAITING:
            marks.append(pytest.mark.xfail(reason=AWAITING[block_id], strict=True))
        yield pytest.param(block_id, code, id=block_id, marks=marks)


# ------------------------------------------------------------------ the emulator, in a thread


def _seed(server: FakeTimServer) -> None:
    """The ids the README's examples use."""
    gid = server.create_group("@TGS#1YMVAB3IZ")
    server.send_group_msg(gid, msg_seq=158)
    for round_ in range(50):  # seqs past 42 (start_seq=42), 250 keys (more than one page)
        server.put_group_extensions(
            gid, 158, {f"key{i}": str(round_) for i in range(round_ * 5, round_ * 5 + 5)}
        )
    server.send_c2c_msg("62768", "116400", msg_key="44739199_12_1665388280")
    server.put_c2c_extensions("62768", "116400", "44739199_12_1665388280", {"k": "v"})
    group = server.create_group("@TGS#aC5SZEAEF")
    server.set_group_attrs(group, {"attr_key1": "attr_val1"})
    server.set_group_counters(group, {"like": 5, "views": 100})


class _EmulatorThread:
    """A FakeTimServer on its own event loop in a thread, so a block may call asyncio.run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = FakeTimServer()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the emulator's loop (its state is not shared across threads)."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def __enter__(self) -> FakeTimServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=30)
        self.call(lambda: _seed(self.server))
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture
def emulator_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[TimClient]]:
    """Start a seeded emulator and make ``TimClient`` connect to it (see the module docstring)."""
    with _EmulatorThread() as server:

        class _EmulatorClient(TimClient):
            def __init__(self, sdkappid: int, *args: Any, **kwargs: Any) -> None:
                for where in ("region", "base_url", "secret_key", "usersig"):
                    kwargs.pop(where, None)
                super().__init__(
                    sdkappid,
                    *args,
                    secret_key=server.secret_key,
                    base_url=server.base_url,
                    **kwargs,
                )

        monkeypatch.setattr(tim_async, "TimClient", _EmulatorClient)
        monkeypatch.setattr(tim_async.client, "TimClient", _EmulatorClient)
        yield _EmulatorClient


def _is_pytest_example(code: str) -> bool:
    return re.search(r"^(?:async )?def test_", code, re.M) is not None


def _module(block_id: str) -> str:
    return "test_" + block_id.replace("-", "_")


@pytest.fixture(scope="module")
def pytest_examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Run every pytest example of the README in one project of their own (one pytest run for
    all of them: each is a file), strict mode. Returns each file's outcomes, and "output"."""
    project = tmp_path_factory.mktemp("readme_examples")
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for block_id, code, reason in _blocks():
        if reason is None and _is_pytest_example(code):
            (project / f"{_module(block_id)}.py").write_text(code, encoding="utf-8")
    report = project / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}", str(project)],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # stdout: the test run (its warnings summary included); stderr: pytest-asyncio's note on
    # an unset loop scope, which any new project gets.
    outcomes: dict[str, list[str]] = {"output": [proc.stdout, proc.stderr]}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        module = case.get("classname", "").rpartition(".")[2]
        outcomes.setdefault(module, []).append(kinds[0] if kinds else "passed")
    return outcomes


def _check_pytest_example(block_id: str, code: str, outcomes: dict[str, list[str]]) -> None:
    stdout, stderr = outcomes["output"]
    want = len(re.findall(r"^(?:async )?def test_", code, re.M))
    assert outcomes.get(_module(block_id)) == ["passed"] * want, stdout + stderr
    assert "warning" not in stdout, stdout


@pytest.fixture
def readme_redis_url() -> Iterator[str]:
    try:
        with redis_server() as server:
            yield server.url
    except RedisServerNotFound as exc:
        pytest.skip(f"README Redis block: {exc}")


@pytest.mark.parametrize(("block_id", "code"), list(_params()))
def test_readme_block(block_id: str, code: str, request: pytest.FixtureRequest) -> None:
    if _is_pytest_example(code):
        _check_pytest_example(block_id, code, request.getfixturevalue("pytest_examples"))
        return
    emulator_client: type[TimClient] = request.getfixturevalue("emulator_client")
    if "TIM_REDIS_URL" in code:
        # A block for the shared limiter reads its Redis (and key) from the environment, as
        # the command line does: give it a throw-away redis-server.
        redis_url = request.getfixturevalue("readme_redis_url")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("TIM_REDIS_URL", redis_url)
        monkeypatch.setenv("TIM_SECRET_KEY", "replaced by the harness")
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    if not compiled.co_flags & inspect.CO_COROUTINE:
        exec(compiled, namespace)
        return

    async def body() -> None:
        async with emulator_client(1400000000, secret_key="from the harness") as tim:
            namespace["tim"] = tim
            result = eval(compiled, namespace)
            await result

    asyncio.run(body())


def test_every_block_is_collected() -> None:
    # The extraction itself: a block the regex missed would go untested without a trace.
    assert len(_blocks()) == README.read_text(encoding="utf-8").count("```python\n")


def test_readme_names_the_ci_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r'TEST_CMD="(.*)"', ci)
    assert command
    assert command.group(1) in README.read_text(encoding="utf-8").splitlines()
