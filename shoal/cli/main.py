"""``shoal``: the command line. Exit 0 on success, 1 on a user error, 2 on a usage error."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Sequence

import structlog

from shoal import __version__
from shoal.cli import agent_cmd, alloc, dev, eval_cmd, image, job, node, server, service
from shoal.cli.output import err
from shoal.errors import JobFileError, ShoalError, UsageError
from shoal.log import configure_cli

NOUNS = (job, node, alloc, eval_cmd, service, image, server, agent_cmd, dev)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with the usage line
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().rstrip()}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shoal", description="shoal: run containers on a cluster, simply.")
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = p.add_subparsers(dest="noun", metavar="<command>", parser_class=_Parser)
    for mod in NOUNS:
        mod.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2 if not argv else 0
        if args.noun != "agent":
            configure_cli()
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except JobFileError as e:
        err.print("[red]Error:[/] job file is invalid:", markup=True)
        for p in e.problems:
            err.print(f"  {p}", markup=False)
        return e.exit_code
    except ShoalError as e:
        err.print(f"Error: {e.message}", markup=False)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal error: logged with context, not a bare traceback
        structlog.get_logger("shoal.cli").exception("internal error", command=argv)
        err.print(f"Error: internal error: {type(e).__name__}: {e}", markup=False)
        return 3


if __name__ == "__main__":
    sys.exit(main())
