"""The asyncio implementation: the only one (the sync facade is generated from it)."""
