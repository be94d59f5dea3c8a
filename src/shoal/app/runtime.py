"""How `Component.get` is answered, and how calls arrive: stubs out, handlers in.

`LocalRuntime` answers with the object itself for every component it holds (the monolith, and
the co-located components of a deployed process): a call is a plain method call, with no
serialization. With `check_args` a thin proxy validates each call's arguments against the
interface first, so a monolith refuses what a deployment would.

Otherwise `get` returns a stub built once per interface and strategy: each method encodes its
arguments with the method's codec (a wrong type raises CallTypeError here, on the caller's
side), takes the deadline (the method's default, or the one the caller's own call inherited,
whichever is sooner), and sends the call through the component's `Remote` (governance and
strategy) inside the Observer's client span, which writes the traceparent into the frame's
metadata. `handlers` is the other way: the RPC server's table of
`"Interface.method" -> async (payload, metadata) -> bytes` for the components a process
serves, each dispatch inside a server span."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..rpc.deadline import effective
from .component import Application, Component
from .config import STRATEGIES, DeployConfig
from .interface import InterfaceSpec, MethodSpec
from .remote import DEFAULT_DEADLINE_S, Remote, StrategyRefused

if TYPE_CHECKING:
    from ..rpc.server import Handler
    from .observe import Observer

T = TypeVar("T")


class LocalRuntime:
    """Components in this process by interface; `remotes` for the rest (None: a monolith)."""

    def __init__(self, app: Application, *, check_args: bool = False,
                 remotes: Mapping[str, Remote] | None = None,
                 config: DeployConfig | None = None, observer: Observer | None = None):
        self.app, self.check_args = app, check_args
        self.local: dict[str, Component] = {}
        self.remotes = dict(remotes or {})
        self.config = config or DeployConfig()
        self.observer = observer
        self._stubs: dict[tuple[str, str], Any] = {}
        self._resolved: dict[type, Any] = {}  # `get(iface)` with no strategy, once resolved

    def get(self, iface: type[T], *, strategy: str | None = None) -> T:
        if strategy is None:  # the hot path: what this interface resolved to before
            hit = self._resolved.get(iface)
            if hit is not None:
                return cast(T, hit)
        found = self._resolve(iface, strategy)
        if strategy is None:
            self._resolved[iface] = found
        return cast(T, found)

    def _resolve(self, iface: type, strategy: str | None) -> Any:
        d = self.app.by_interface(iface)
        if strategy is not None and strategy not in STRATEGIES:
            raise StrategyRefused(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        impl = self.local.get(d.name)
        if impl is not None:
            if not self.check_args:
                return impl
            key = (d.name, "checked")
            if key not in self._stubs:
                self._stubs[key] = checked_proxy(d.spec, impl)
            return self._stubs[key]
        remote = self.remotes.get(d.name)
        if remote is None:
            raise LookupError(f"{d.name} neither runs in this process nor is reachable "
                              "(no remote for it)")
        chosen = strategy or self.config.component(d.name).strategy
        key = (d.name, chosen)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = make_stub(d.spec, remote, chosen, self.observer,
                                                self.config.component(d.name).deadline_ms)
        return stub


def checked_proxy(spec: InterfaceSpec, impl: Component) -> Any:
    """`impl` with each interface method's arguments validated before the plain call."""
    attrs: dict[str, Any] = {"__slots__": (), "__repr__": lambda self: f"<checked {impl!r}>"}
    for name, m in spec.methods.items():
        attrs[name] = _checked(m.codec.check_args, getattr(impl, name))
    return type(f"Checked{spec.name}", (), attrs)()


def _checked(check: Callable[[tuple, dict], None], fn: Callable[..., Any]) -> Any:
    @functools.wraps(fn)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return await fn(*args, **kwargs)
    return call


def make_stub(spec: InterfaceSpec, remote: Remote, strategy: str, observer: Observer | None,
              component_deadline_ms: int | None = None) -> Any:
    attrs: dict[str, Any] = {"__slots__": (),
                             "__repr__": lambda self: f"<{spec.name} stub, {strategy}>"}
    for name, m in spec.methods.items():
        ms = m.deadline_ms or component_deadline_ms
        attrs[name] = _stub_method(spec.name, m, remote, strategy, observer,
                                   ms / 1000 if ms else DEFAULT_DEADLINE_S)
    return type(f"{spec.name}Stub", (), attrs)()


def _stub_method(component: str, m: MethodSpec, remote: Remote, strategy: str,
                 observer: Observer | None, default_s: float) -> Any:
    codec, name, invoke = m.codec, m.name, remote.invoke

    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        payload = codec.encode_args(args, kwargs)
        deadline = effective(default_s)
        assert deadline is not None
        metadata: dict[str, str] = {}
        if observer is None:
            data = await invoke(m, payload, deadline, metadata, strategy)
        else:
            with observer.client_call(component, name, metadata):
                data = await invoke(m, payload, deadline, metadata, strategy)
        return None if data is None else codec.decode_result(data)

    call.__name__ = call.__qualname__ = name
    return call


def handlers(spec: InterfaceSpec, impl: Component, observer: Observer | None) -> dict[str, Handler]:
    return {m.qualname: _handler(spec.name, m, getattr(impl, name), observer)
            for name, m in spec.methods.items()}


def _handler(component: str, m: MethodSpec, fn: Callable[..., Any],
             observer: Observer | None) -> Handler:
    codec, name = m.codec, m.name

    async def handle(payload: bytes, metadata: Mapping[str, str]) -> bytes:
        if observer is None:
            args, kwargs = codec.decode_args(payload)
            return codec.encode_result(await fn(*args, **kwargs))
        with observer.server_call(component, name, metadata):
            args, kwargs = codec.decode_args(payload)
            return codec.encode_result(await fn(*args, **kwargs))

    return handle


async def start_components(runtime: LocalRuntime, names: list[str], client: Any,
                           metrics: Any) -> list[Component]:
    """Make each named component (no-argument constructor), give it its context, then start
    them all in order: every `get` answers once the first `start` runs."""
    from .context import make_context

    made = []
    for d in runtime.app.select(names):
        impl = d.impl()
        impl.ctx = make_context(runtime.app.name, d.name, runtime, client, metrics)
        runtime.local[d.name] = impl
        made.append(impl)
    for impl in made:
        await impl.start()
    return made
