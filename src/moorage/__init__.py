"""Moorage: a self-hosted container registry that implements Amazon ECR.

One process serves the ECR control-plane API and the OCI Distribution API over one state.
`create_app(settings)` builds the ASGI app; `moorage serve` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "create_app"]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from moorage.app import create_app
else:

    def create_app(*args: Any, **kwargs: Any) -> Any:
        from moorage.app import create_app as build

        return build(*args, **kwargs)
