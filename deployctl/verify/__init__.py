"""Smoke checks against deployed services (`deployctl verify`, `deployctl deploy --verify`).

The checks are declared in the environment's config (`[[checks]]`, deployctl/config.py): each check is a flow
of HTTP steps run in order, a step's base URL being its service's Cloud Run URL. template.py resolves the
small `${...}` syntax, runner.py runs the flows (independent ones concurrently, each step with a deadline),
suite.py selects the checks and finds the URLs, junit.py writes the report CI systems render, and
deploy_hook.py is what `deploy --verify` runs after traffic moves.
"""
