"""The pytest plugin (``tim_server`` fixture) as a user's project meets it: the README's test
examples, copied into a project of their own with an empty ``pytest.ini`` (pytest-asyncio's
default strict mode), pass in a separate pytest run."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_test_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Testing your code: the emulator")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


async def run_pytest(project: Path, *args: str) -> tuple[int, str]:
    """pytest in a subprocess, in ``project`` (its own rootdir and ini), plugins autoloaded as
    in a user's environment; ``args`` (default: the whole project) end with what to run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(project),
        *(args or (str(project),)),
        cwd=project,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def project(tmp_path: Path, ini: str, files: dict[str, str]) -> Path:
    (tmp_path / "pytest.ini").write_text(ini, encoding="utf-8")
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    return tmp_path


USER_TESTS = """
import asyncio

import pytest

from tim_async.testing import FakeTimServer

SEEN: list[FakeTimServer] = []

pytestmark = pytest.mark.tim_server(page_size=9, admins=("module-admin",))


@pytest.mark.asyncio
@pytest.mark.tim_server(page_size=7, premium=False)
async def test_marker_options_win(tim_server: FakeTimServer) -> None:
    # the closest marker wins per option; the module's others still apply
    assert (tim_server.page_size, tim_server.premium) == (7, False)
    assert tim_server.admin == "module-admin"
    assert tim_server.base_url.startswith("http://127.0.0.1:")
    reader, writer = await asyncio.open_connection("127.0.0.1", tim_server.port)
    writer.close()
    await writer.wait_closed()
    SEEN.append(tim_server)


@pytest.mark.asyncio
async def test_each_test_gets_a_fresh_started_server(tim_server: FakeTimServer) -> None:
    assert SEEN and SEEN[0] is not tim_server
    assert tim_server.page_size == 9
    # the previous test's server was closed after it
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", SEEN[0].port)
    assert tim_server.requests == []


async def test_without_the_mark(tim_server: FakeTimServer) -> None:
    pass
"""


async def test_readme_examples_and_fixture_in_a_project_of_their_own(tmp_path: Path) -> None:
    blocks = readme_test_blocks()
    assert len(blocks) == 2, "the README's emulator section holds the two test examples"
    assert "tim_server: FakeTimServer" in blocks[1]
    files = {f"test_readme_{i}.py": block for i, block in enumerate(blocks)}
    files["test_user.py"] = USER_TESTS
    root = project(tmp_path, "[pytest]\n", files)  # empty: pytest-asyncio in strict mode
    code, out = await run_pytest(root, "-rA", str(root))
    # strict mode: the README examples and the marked tests pass; the unmarked one fails
    passed = set(re.findall(r"^PASSED (\S+)", out, re.M))
    assert passed == {
        "test_readme_0.py::test_my_bot",
        "test_readme_1.py::test_pull",
        "test_user.py::test_marker_options_win",
        "test_user.py::test_each_test_gets_a_fresh_started_server",
    }, out
    assert re.search(r"^FAILED test_user.py::test_without_the_mark", out, re.M), out
    assert code == 1, out
    # asyncio_mode = "auto": the mark is not needed
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n", encoding="utf-8")
    code, out = await run_pytest(root, "test_user.py")
    assert code == 0 and re.search(r"\b3 passed\b", out), out


def test_plugin_is_registered_by_the_package() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "tim_async"]
    assert entry.value == "tim_async.testing.pytest_plugin"


@pytest.mark.tim_server(page_size=3)
async def test_fixture_in_this_suite(tim_server: object) -> None:
    from tim_async.testing import FakeTimServer

    assert isinstance(tim_server, FakeTimServer) and tim_server.page_size == 3


async def test_readme_test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = {f"test_readme_{i}.py": block for i, block in enumerate(readme_test_blocks())}
    root = project(tmp_path, "[pytest]\n", files)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        *files,
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, out.decode()
