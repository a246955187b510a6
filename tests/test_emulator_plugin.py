"""The pytest plugin (``tim_server`` fixture) as a user's project meets it: in a project of its
own with an empty ``pytest.ini`` (pytest-asyncio's default strict mode) and with
``asyncio_mode = auto``, in a separate pytest run; and the README's test examples pass
``mypy --strict``. (That the README's test examples pass in such a project, strict mode, is
``tests/test_readme.py``'s one pytest run for all of them.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import tempfile
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


async def test_the_fixture_in_a_project_of_its_own(tmp_path: Path) -> None:
    blocks = readme_test_blocks()
    assert len(blocks) == 2, "the README's emulator section holds the two test examples"
    assert "tim_server: FakeTimServer" in blocks[1]  # the fixture, as the README shows it
    root = project(tmp_path, "[pytest]\n", {"test_user.py": USER_TESTS})  # empty: strict mode
    code, out = await run_pytest(root, "-rA", str(root))
    # strict mode: the marked tests pass; the unmarked one fails
    passed = set(re.findall(r"^PASSED (\S+)", out, re.M))
    assert passed == {
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


def mypy_cache_dir() -> Path:
    """A mypy cache kept across runs (cold, mypy takes seconds to analyse aiohttp and pytest;
    warm, a fraction of one), one per checkout and mypy version. mypy re-checks whatever
    changed since, as in any incremental run."""
    from mypy.version import __version__ as mypy_version

    where = hashlib.sha256(str(README.parent).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tim_async-readme-mypy-{mypy_version}-{where}"


async def test_readme_test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = {f"test_readme_{i}.py": block for i, block in enumerate(readme_test_blocks())}
    root = project(tmp_path, "[pytest]\n", files)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--cache-dir",
        str(mypy_cache_dir()),
        *files,
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, out.decode()
