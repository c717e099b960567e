"""`python -m dho`: the same as the `dho` command."""

from dho.cli import main

main()
