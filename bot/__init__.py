"""Front ends, settings, wiring and the `recovery-bot` command."""
