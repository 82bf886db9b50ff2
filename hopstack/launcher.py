"""The ``hopstack`` command's entry point: ``hopstack --version`` is answered before the command line's own
imports (typer, rich: about a third of a second on 2 cores); everything else runs :func:`hopstack.cli.main`."""

import sys


def main() -> None:
    """Print the version for a lone ``--version``, else run the command line."""
    if sys.argv[1:] == ["--version"]:
        from hopstack import __version__

        print(f"hopstack {__version__}")
        return
    from hopstack.cli import main as run_cli

    run_cli()
