"""cedarkey's client: the ``cedarkey`` CLI and a small Python SDK."""

from .sdk import ApiError, Client, LoginError

__all__ = ["ApiError", "Client", "LoginError"]
