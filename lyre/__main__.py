"""`python -m lyre` runs the same app as the `lyre` console script."""

from lyre.cli.app import main

main()
