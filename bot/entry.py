"""The `recovery-bot` command's entry point, kept apart from `bot.cli` so that Ctrl-C while the program is still
loading its libraries (the first half second) leaves quietly, like Ctrl-C later does, not through a traceback."""

import sys


def main() -> int:
    try:
        from bot.cli import main as run_command
    except KeyboardInterrupt:
        print("\ninterrupted, bye", file=sys.stderr)
        return 130
    return run_command()
