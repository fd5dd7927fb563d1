"""Command-line subcommands, registered by the layer that implements them.

The command line (:mod:`satmon.cli`) sits above every layer and imports each layer's command
module; a command module must not import the command line back (``tests/test_layering.py``).
So each command module keeps its own :class:`Commands` list, fills it with the ``command``
decorator, and the command line reads the lists::

    COMMANDS = Commands()

    @COMMANDS.command("export", "write a run's series as a tidy CSV", _export_arguments)
    def _cmd_export(args): ...

Pure standard library, so registering costs nothing at import.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]
AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument set-up and handler."""

    name: str
    help: str
    add_arguments: AddArguments
    handler: Handler


class Commands(list):
    """The subcommands of one module, in the order they were registered."""

    def command(self, name: str, help: str,
                add_arguments: AddArguments) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of subcommand ``name``."""
        if any(c.name == name for c in self):
            raise ValueError(f"subcommand {name!r} is registered twice")

        def wrap(fn: Handler) -> Handler:
            self.append(Command(name, help, add_arguments, fn))
            return fn

        return wrap
