"""``python -m mailwright``: the admin command line (see ``mailwright.cli.main``)."""

from mailwright.cli.main import main

main()
