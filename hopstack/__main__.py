"""``python -m hopstack`` runs the command line."""

from hopstack.cli import main

main()
