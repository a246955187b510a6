"""Suite-wide set-up: tim_async's modules byte-compiled once for the processes the tests start.

Many tests run ``python -m tim_async ...``, the emulator or a benchmark as a child process.
Where ``PYTHONDONTWRITEBYTECODE`` is set (as on this project's CI machines) and the package is
an editable install, Python never writes the ``__pycache__`` files a normal install has, so
every such child compiled tim_async's modules from source again: about 0.17 s of the 0.5 s it
took to start. The suite compiles them once, where Python itself would have put them (the
ignored ``__pycache__`` folders beside the sources); the children read them and run the same
source. With bytecode writing on, Python does this by itself and nothing is done here.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    if not sys.flags.dont_write_bytecode:
        return
    for folder in ("tim_async", "benchmarks"):
        compileall.compile_dir(REPO / folder, quiet=1, workers=1)
