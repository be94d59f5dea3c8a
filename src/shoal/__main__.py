"""`python -m shoal`: the same as the `shoal` command (what local cluster processes run)."""

from .cli import app

app(prog_name="shoal")
