"""An asyncio HTTP/1.1 (and plain TCP) reverse proxy fed by the registry, routing through the
pickers and the caller. See docs/gateway.md."""

from .app import Gateway, GatewayConfig
from .http1 import (
    HttpError,
    RequestHead,
    ResponseHead,
    error_response,
    parse_request,
    parse_response,
)
from .pool import Pool, Pools
from .proxy import HttpProxy, ProxyLimits
from .stats import GatewayStats
from .tcp import TcpProxy

__all__ = [
    "Gateway", "GatewayConfig", "GatewayStats", "HttpError", "HttpProxy", "Pool", "Pools",
    "ProxyLimits", "RequestHead", "ResponseHead", "TcpProxy", "error_response", "parse_request",
    "parse_response",
]
