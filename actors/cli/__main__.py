"""``python -m actors.cli …`` is ``llmbus …`` (the bench starts actor processes this way)."""

from actors.cli.quick import main

main()
