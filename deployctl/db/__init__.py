"""PostgreSQL helpers: connect with timeouts, SQLSTATE classification, role/database checks."""
