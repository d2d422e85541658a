"""Typer apps, one module per command group: parse, call a command, render. Nothing else."""
