"""The ``pixelmill`` command: ``pixelmill run ...`` / ``python -m pixelmill run ...``."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """A plain ``run`` command line (``run_args``) is run without Typer, its workers' fork
    server started as soon as the run's imports are done; ``--version`` alone answers
    without Typer too. Anything else goes to the Typer command line.
    """
    if sys.argv[1:] == ["--version"]:  # as the CLI's --version says it, without loading it
        from importlib import metadata

        print(f"pixelmill {metadata.version('pixelmill')}")
        return
    if sys.argv[1:2] == ["run"]:
        from pixelmill.engine.forkserver import start_early
        from pixelmill.run_args import parse_run_args

        # Imports what the run needs (Pillow and the engine too), then forks the server:
        # it starts with them loaded, not importing them again beside this process.
        arguments = parse_run_args(sys.argv[2:])
        if arguments is not None:  # else Typer parses (or refuses) first: no server yet
            start_early()
            sys.exit(_run(arguments))
    from pixelmill.cli import main as cli_main

    cli_main()


def _run(arguments: dict[str, object]) -> int:
    """``run_images`` ended as Typer's standalone mode ends a command: Ctrl-C before the
    render began (during it, ``run_images`` handles it) exits 130 quietly, end of input
    prints "Aborted!" and exits 1, a closed pipe exits 1."""
    import errno

    from pixelmill.run_command import run_images

    try:
        return run_images(**arguments)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return 130
    except EOFError:
        print("\nAborted!", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the exit)
        return 1


if __name__ == "__main__":
    main()
