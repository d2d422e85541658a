"""api-key-service: issues and verifies API keys (in memory; stores only a peppered HMAC)."""
