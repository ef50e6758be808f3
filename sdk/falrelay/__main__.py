"""`python -m falrelay`: the `falrelay` command."""

from falrelay.cli import main

main()
