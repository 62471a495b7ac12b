"""Shared fixtures: async backend, and the pytest options every tier uses."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
