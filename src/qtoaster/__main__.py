"""Allow ``python -m qtoaster``."""

from qtoaster.cli.main import main

main()
