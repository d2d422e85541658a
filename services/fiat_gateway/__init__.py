"""fiat-gateway: records fiat deposits (PostgreSQL, migrations/fiat_gateway)."""
