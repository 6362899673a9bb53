"""The ``fgvlm`` command line: a typer app assembled from ``fgvlm.commands.*`` (one module per command group)."""

from __future__ import annotations

import importlib
import sys

import click
import typer

from fgvlm.config import ConfigError

app = typer.Typer(
    name="fgvlm",
    help="Fine-grained visual recognition with large multimodal models.\n\n"
    "Examples:\n\n"
    "  fgvlm data info --dataset flowers102 --root ../shared/data/flowers102-mini\n\n"
    "  fgvlm list models",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)

# (module, name in the CLI); a group module defines `app`, a single-command module defines `command`.
COMMANDS = [
    ("fgvlm.commands.data", "data"),
    ("fgvlm.commands.listing", "list"),
    ("fgvlm.commands.models", "models"),
    ("fgvlm.commands.eval", "eval"),
    ("fgvlm.commands.head", "head"),
    ("fgvlm.commands.predict", "predict"),
    ("fgvlm.commands.cnn", "cnn"),
    ("fgvlm.commands.prompts", "prompts"),
    ("fgvlm.commands.report", "report"),
    ("fgvlm.commands.export", "export"),
    ("fgvlm.commands.sft", "sft"),
    ("fgvlm.commands.study", "study"),
    ("fgvlm.commands.publish", "publish"),
]

for module_name, cli_name in COMMANDS:
    module = importlib.import_module(module_name)
    if hasattr(module, "app"):
        app.add_typer(module.app, name=cli_name)
    else:
        app.command(cli_name, help=module.command.__doc__)(module.command)


def main(argv: list[str] | None = None) -> None:
    """Entry point; user errors (bad config, missing data, unknown names) print one clear line and exit 2."""
    from fgvlm.data.base import BadImageError, DatasetError
    from fgvlm.registry import UnknownNameError

    try:
        result = app(args=argv, standalone_mode=False)
    except (ConfigError, DatasetError, BadImageError, UnknownNameError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.ClickException as err:  # usage errors: click's own message and exit code
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
