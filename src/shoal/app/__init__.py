"""Components: one application, run as a monolith or as services. See docs/components.md.

Names load on first use, so `import shoal.app.config` (the CLI, the manifests) does not pull
in the RPC, the client or OpenTelemetry."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Component": "component", "Application": "component", "Context": "context",
    "idempotent": "interface", "deadline": "interface", "CallTypeError": "interface",
    "ConfigError": "config", "DeployConfig": "config", "load_deploy": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal.app' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
