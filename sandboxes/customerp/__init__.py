"""The Customerp sandbox: an in-memory ERP serving the published REST contract (openapi.yaml beside this file)."""

from sandboxes.customerp.app import DEFAULT_API_KEY, CustomerpSandboxConfig, create_app

__all__ = ["DEFAULT_API_KEY", "CustomerpSandboxConfig", "create_app"]
