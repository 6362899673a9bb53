"""``python -m fgvlm`` (what torchrun launches) runs the CLI."""

from fgvlm.cli import main

if __name__ == "__main__":
    main()
