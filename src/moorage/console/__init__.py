"""The web console: server-rendered pages at `/console/` over the same services and the same
Authorizer as the ECR API (see `console/web.py`; sessions and CSRF in `console/session.py`)."""

from __future__ import annotations

from moorage.console.session import derive_key
from moorage.console.web import ConsoleApp, ConsoleServices

__all__ = ["ConsoleApp", "ConsoleServices", "derive_key"]
