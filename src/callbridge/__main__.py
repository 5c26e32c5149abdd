"""`python -m callbridge` is the `callbridge` command."""

from callbridge.cli import main

main()
