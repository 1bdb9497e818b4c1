"""The async Images API core: typed requests, providers, retries, validation; no Discord here."""
