"""cross-chain-integration: records signed cross-chain transfers (PostgreSQL, migrations/cross_chain_integration)."""
