"""deployctl: Cloud Run deploys with Cloud SQL migrations, secrets and health proven."""

__version__ = "0.1.0"
