"""Customerp (the company's Custom ERP): REST contract models and the typed httpx client."""
