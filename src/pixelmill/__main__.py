"""The ``pixelmill`` command: ``pixelmill run ...`` / ``python -m pixelmill run ...``."""

from __future__ import annotations

import sys


def main() -> None:
    """Start the workers' fork server first, then load and run the command line.

    The server imports Pillow and the core on another core while this process imports
    Typer, Rich and the settings: about a tenth of a second off every ``pixelmill run``.
    """
    if sys.argv[1:2] == ["run"]:
        from pixelmill.engine.forkserver import start_early

        start_early()
    from pixelmill.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
