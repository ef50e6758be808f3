"""Clients (tenants) as the operator sees them: their limits, their usage, and the request rate
every replica enforces on them together."""
