"""One module per verb: plain functions taking a Context and returning typed results. No Typer, no Rich."""
