"""Deploying services: the desired state from the config (desired.py), what runs and the plan against it
(prepare.py, plan.py), the deploy history kept in the service (history.py), the health gate (gate.py), migrations
hooks (migrations.py), one service's rollout (rollout.py) and the rollouts of a run (schedule.py)."""
