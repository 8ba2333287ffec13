"""``python -m kbai`` is the ``kbai`` command."""

from kbai.cli import main

main()
