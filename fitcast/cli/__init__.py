"""The ``fitcast`` command line (DESIGN §7): the composition root of the project.

``parser`` holds every command and option (with help, defaults and examples),
``commands`` what each does.  Errors print one line and exit non-zero.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from fitcast.cli.commands import COMMANDS
from fitcast.cli.parser import build_parser
from fitcast.errors import FitcastError

__all__ = ["main", "build_parser"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FitcastError as exc:
        print(f"fitcast: error: {exc}", file=sys.stderr)
        return 2 if exc.status < 500 else 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"fitcast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fitcast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the top-level handler: one line, never a traceback
        if os.environ.get("FITCAST_DEBUG") == "1":
            raise
        detail = " ".join(str(exc).split())[:300]
        print(f"fitcast: error: unexpected {type(exc).__name__}: {detail} (FITCAST_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
