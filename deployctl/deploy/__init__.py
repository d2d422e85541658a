"""Deploying services: the desired state from the config (desired.py), the plan against what runs (plan.py),
the health gate (gate.py), migrations hooks (migrations.py) and the rollout across services (rollout.py)."""
