"""Service registry on the replicated store: leased registrations, watched discovery with a
stale-tolerant cache, active health checks and passive outlier ejection. See docs/registry.md."""

from .health import HealthChecker, HealthConfig, HealthState, check_http, check_tcp
from .instance import ROOT, Instance, instance_key, parse_address, service_prefix
from .outlier import OutlierConfig, OutlierDetector
from .register import Registration
from .watcher import ServiceWatcher, Snapshot, list_instances

__all__ = [
    "ROOT", "HealthChecker", "HealthConfig", "HealthState", "Instance", "OutlierConfig",
    "OutlierDetector", "Registration", "ServiceWatcher", "Snapshot", "check_http", "check_tcp",
    "instance_key", "list_instances", "parse_address", "service_prefix",
]
