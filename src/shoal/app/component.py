"""Components and the application that lists them.

A component is an interface (a `typing.Protocol` or an ABC of `async def` methods with type
hints, read by shoal.app.interface) and an implementation that subclasses both it and
`Component`:

    class Inventory(Protocol):
        async def reserve(self, sku: str, count: int) -> bool: ...

    class InventoryImpl(Component, Inventory):
        async def reserve(self, sku: str, count: int) -> bool:
            ...self.ctx.client...          # the store, a lock, an election, logger, metrics
            ...self.get(Pricing)...        # another component: a local object or an RPC stub

    App = Application("shop", InventoryImpl, PricingImpl, errors=(OutOfStock,))

Components name each other by interface only, never by address; where the other one runs is
the runner's business (shoal.app.monolith, shoal.app.process). A component's name is its
interface's name, the name the deploy file and the registry use. An exception class listed
in `errors` raised by a method is raised again as that class on a remote caller's side (the
builtins always are), so the same code handles it in a monolith and deployed.

`start()` and `stop()` are hooks the runner awaits around the component's life; the default
does nothing."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .interface import InterfaceSpec, interface_spec

if TYPE_CHECKING:
    from .context import Context

T = TypeVar("T")


class Component:
    """Base of every implementation. The runner sets `ctx` before `start()`."""

    ctx: Context

    def get(self, iface: type[T], *, strategy: str | None = None) -> T:
        """The component serving `iface`: the object itself when it runs in this process,
        else a stub calling it over RPC with `strategy` (failover, failfast, failsafe,
        failback, forking, broadcast; default: the deploy file's)."""
        return self.ctx.runtime.get(iface, strategy=strategy)

    async def start(self) -> None:
        """Called once the whole process's components exist and before it serves calls."""

    async def stop(self) -> None:
        """Called when the process stops, after it stopped serving calls."""


def interface_of(impl: type) -> type:
    """The one interface `impl` implements: a base that is a Protocol or an ABC."""
    if not (isinstance(impl, type) and issubclass(impl, Component)):
        raise TypeError(f"{impl!r} is not a Component subclass")
    candidates = [b for b in impl.__mro__[1:]
                  if b not in (Component, typing.Protocol, typing.Generic) and _is_interface(b)]
    # An interface extending another lists both: keep the most derived.
    found = [b for b in candidates if not any(o is not b and issubclass(o, b) for o in candidates)]
    if len(found) != 1:
        names = ", ".join(b.__name__ for b in found) or "none"
        raise TypeError(f"{impl.__name__} must implement exactly one interface (a Protocol or "
                        f"ABC among its bases); found {names}")
    return found[0]


def _is_interface(cls: type) -> bool:
    return bool(cls.__dict__.get("_is_protocol")) or bool(cls.__dict__.get("__abstractmethods__"))


@dataclass(frozen=True)
class ComponentDef:
    name: str
    interface: type
    impl: type[Component]
    spec: InterfaceSpec


class Application:
    """The application: its name (the registry's namespace) and its components."""

    def __init__(self, name: str, *impls: type[Component],
                 errors: Iterable[type[BaseException]] = ()):
        from ..registry.instance import check_name

        check_name("application name", name)
        self.name = name
        self.errors = tuple(errors)  # raised again by name on the caller's side
        self.components: dict[str, ComponentDef] = {}
        self._by_interface: dict[type, ComponentDef] = {}
        for impl in impls:
            iface = interface_of(impl)
            spec = interface_spec(iface)
            if spec.name in self.components:
                raise TypeError(f"two implementations of {spec.name}: "
                                f"{self.components[spec.name].impl.__name__} and {impl.__name__}")
            for method in spec.methods:
                if hasattr(Component, method):
                    raise TypeError(f"{spec.name}.{method} would hide Component.{method}; "
                                    "rename the method")
                if not callable(getattr(impl, method, None)) or getattr(
                        getattr(impl, method), "__isabstractmethod__", False):
                    raise TypeError(f"{impl.__name__} does not implement {spec.name}.{method}")
            d = ComponentDef(spec.name, iface, impl, spec)
            self.components[spec.name] = d
            self._by_interface[iface] = d
        if not self.components:
            raise TypeError(f"application {name!r} has no components")

    def by_interface(self, iface: type) -> ComponentDef:
        d = self._by_interface.get(iface)
        if d is None:
            raise LookupError(f"{getattr(iface, '__name__', iface)!r} is not a component of "
                              f"{self.name} (components: {', '.join(self.components)})")
        return d

    def select(self, names: Iterable[str]) -> list[ComponentDef]:
        out = []
        for n in names:
            if n not in self.components:
                raise LookupError(f"{n!r} is not a component of {self.name} "
                                  f"(components: {', '.join(self.components)})")
            out.append(self.components[n])
        return out

    def service(self, component: str) -> str:
        """The registry's service name of a component."""
        return f"{self.name}.{component}"


def load_object(path: str) -> Any:
    """`module:Name` -> the object it names (an Application, an interface...), or a
    ValueError naming what is missing."""
    import importlib

    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{path!r}: expected module:Name, e.g. examples.shop:App")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{path!r}: cannot import {module}: {exc}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ValueError(f"{path!r}: module {module} has no attribute {attr!r}") from None


def load_app(path: str) -> Application:
    """`module:Name` -> the Application it names, or a clear error."""
    app = load_object(path)
    if not isinstance(app, Application):
        raise ValueError(f"{path!r}: {path.partition(':')[2]} is not a shoal.app.Application "
                         f"(got {type(app).__name__})")
    return app
