"""`python -m orchestrator ...` is the `orchestrator` command."""

from .cli.commands import main

if __name__ == "__main__":
    main()
