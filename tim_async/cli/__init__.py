"""The ``tim-async`` command line (also ``python -m tim_async``).

Commands::

    tim-async demo                                   the whole SDK against the embedded emulator
    tim-async ext get --group G --msg-seq N          extensions of a group message (JSON)
    tim-async ext get --to A --msg-key K [--from B]  extensions of a one-to-one message (JSON)
    tim-async ext pull-bulk [TARGETS]                many targets, one JSON line per target
    tim-async attr get --group G                     group custom attributes (JSON)
    tim-async counter get --group G [KEY ...]        group counters (JSON)
    tim-async counter update --group G --mode M K=V  set / increase / decrease counters (JSON)
    tim-async ext set|delete|clear (target) [K=V|K]  write a message's extensions (JSON)
    tim-async attr modify|set|delete|clear --group G write group attributes (JSON)
    tim-async counter delete --group G [KEY ...]     delete counters (JSON)
    tim-async call SERVICE/COMMAND [--body JSON|-]   any REST command (the answer, JSON)

Connection settings come from flags or the environment (``TIM_SDKAPPID``, ``TIM_IDENTIFIER``,
``TIM_SECRET_KEY`` or ``TIM_USERSIG``, ``TIM_REGION``, ``TIM_BASE_URL``, ``TIM_REDIS_URL``); a flag
wins over its variable. The secret key and the UserSig are never printed.

Exit codes: 0 success; 1 the server or the network failed (for ``pull-bulk``: at least one
target failed; for ``demo``: a check failed); 2 bad input (flags, credentials, an unreadable or
malformed targets file); 130 interrupted (Ctrl-C).

``ext pull-bulk`` and malformed lines: a targets *file* (a regular file, named or redirected to
stdin) is checked completely before the first call, so a malformed line stops the run with
exit 2 and nothing is pulled. A *stream* (a pipe or a terminal) cannot be checked ahead without
holding it in memory: the run stops reading at the malformed line, the targets before it are
finished and written, and the exit code is 2. Either way stderr names the line number.
"""

from __future__ import annotations

from tim_async.cli.main import build_parser, main
from tim_async.cli.options import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from tim_async.cli.targets import C2CTarget, GroupTarget, MalformedTargetError, parse_target_line

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "C2CTarget",
    "GroupTarget",
    "MalformedTargetError",
    "UsageError",
    "build_parser",
    "main",
    "parse_target_line",
]
