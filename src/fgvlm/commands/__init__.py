"""One module per CLI command group; each defines ``app`` (a typer.Typer) and imports heavy libraries lazily."""
