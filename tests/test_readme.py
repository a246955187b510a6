"""The README's examples are real: the emulator example runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


async def test_emulator_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_block_after("## Testing your code: the emulator"), "README", "exec"), namespace)
    await namespace["test_my_bot"]()


def test_readme_names_the_ci_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r'TEST_CMD="(.*)"', ci)
    assert command
    assert command.group(1) in README.read_text(encoding="utf-8").splitlines()
