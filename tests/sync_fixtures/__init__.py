"""A tiny aiohttp server (``server.py``) for the portal's tests that need raw HTTP behaviour."""
