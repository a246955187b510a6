"""How a command module adds its commands to the parser (one ``register`` function each).

A module registers a top-level command with :meth:`Commands.command`, or a subcommand of a
group (``ext``, ``attr``, ``counter``, ...) with :meth:`Commands.subcommand`; the group parser is
made on first use. A subcommand gets the connection options; its handler is an async function
of the parsed arguments returning the exit code, and an optional ``prepare(args, parser)``
checks the arguments before the event loop starts (``parser.error`` exits 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from tim_async.cli.options import add_connection_options

__all__ = ["Commands", "Handler", "Prepare"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
Prepare = Callable[[argparse.Namespace, argparse.ArgumentParser], None]


class Commands:
    """The ``tim-async`` command tree under construction."""

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        groups: Mapping[str, tuple[str, str]],
    ) -> None:
        self._subparsers = subparsers
        #: group name -> (help, description) of the groups known in advance
        self._known = groups
        #: group name -> (its parser, the action holding its subcommands)
        self.groups: dict[
            str,
            tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]],
        ] = {}

    def group(self, name: str, *, help: str, description: str) -> None:
        """Declare a command group (``tim-async NAME COMMAND``); declaring it again is a no-op."""
        if name in self.groups:
            return
        parser = self._subparsers.add_parser(name, help=help, description=description)
        action = parser.add_subparsers(title="commands", dest=f"{name}_command", metavar="COMMAND")
        self.groups[name] = (parser, action)

    def command(
        self, name: str, handler: Handler, *, connection: bool = True, **kwargs: Any
    ) -> argparse.ArgumentParser:
        """A top-level command; ``connection=False`` leaves out the connection options."""
        parser = self._subparsers.add_parser(name, **kwargs)
        if connection:
            add_connection_options(parser)
        parser.set_defaults(handler=handler, prepare=None, _parser=parser)
        return parser

    def subcommand(
        self,
        group: str,
        name: str,
        handler: Handler,
        *,
        prepare: Prepare | None = None,
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        """``tim-async GROUP NAME``, with the connection options. A group not declared with
        :meth:`group` is declared from the known groups (help and description) on first use."""
        if group not in self.groups:
            help_text, description = self._known[group]
            self.group(group, help=help_text, description=description)
        _, action = self.groups[group]
        parser = action.add_parser(name, **kwargs)
        add_connection_options(parser)
        parser.set_defaults(handler=handler, prepare=prepare, _parser=parser)
        return parser
