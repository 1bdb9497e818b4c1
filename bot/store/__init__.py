"""Durable state in SQLite: the connection and migrations, the spending ledger, budgets and stored images."""
