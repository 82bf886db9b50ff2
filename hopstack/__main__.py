"""``python -m hopstack`` runs the command line."""

from hopstack.launcher import main

main()
