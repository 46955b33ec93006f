"""`python -m cli` runs the same app as the `lyre` console script."""

from cli.app import main

main()
