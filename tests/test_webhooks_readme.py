"""The README's "Receiving webhooks" example runs as written, against the emulator."""

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


async def test_receiving_webhooks_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_block_after("## Receiving webhooks"), "README", "exec"), namespace)
    await namespace["test_webhook_bot"]()
    assert namespace["likes"] == {next(iter(namespace["likes"])): 3}
    assert len(namespace["seen"]) == 1
