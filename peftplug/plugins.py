"""The plugin host: entry-point discovery, per-plugin isolation, allow and deny lists."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
from typing import Any

import pluggy

from peftplug import builtin_weights, hookspecs
from peftplug.contracts import MethodSpec
from peftplug.errors import PluginLoadError, PluginNotFoundError, did_you_mean

ENTRY_POINT_GROUP = "peftplug"
BUILTIN_PLUGIN = "peftplug.builtin"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One plugin as the host sees it: where it comes from and what it registered."""

    name: str
    distribution: str
    version: str
    methods: tuple[str, ...] = ()
    error: str | None = None


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


class PluginHost:
    """Owns the pluggy manager and the method registry.

    A plugin that fails to import, names a hook that does not exist, or fails to register is
    reported by name and skipped; ``PEFTPLUG_STRICT_PLUGINS=1`` makes that an error.
    ``PEFTPLUG_LOAD_PLUGINS`` (comma-separated) loads only the named entry points and
    ``PEFTPLUG_DISABLE_PLUGINS`` skips the named ones.
    """

    def __init__(self, *, discover: bool = True) -> None:
        self.manager = pluggy.PluginManager("peftplug")
        self.manager.add_hookspecs(hookspecs)
        self.methods: dict[str, MethodSpec] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.strict = os.environ.get("PEFTPLUG_STRICT_PLUGINS", "") not in ("", "0")
        self.add_plugin(builtin_weights, BUILTIN_PLUGIN, "peftplug", _version("peftplug"))
        if discover:
            self._discover()

    @property
    def hook(self) -> Any:
        """The hook relay: ``host.hook.peftplug_<name>(...)``."""
        return self.manager.hook

    def method(self, name: str) -> MethodSpec:
        """The registered method called ``name``, or an error listing the installed ones."""
        if name in self.methods:
            return self.methods[name]
        installed = ", ".join(sorted(self.methods)) or "none"
        broken = [p.name for p in self.plugins.values() if p.error]
        hint = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
        raise PluginNotFoundError(
            f"unknown plugin {name!r}{did_you_mean(name, self.methods)}; installed: {installed} "
            f"(pip install peftplug-<name> to add one){hint}"
        )

    def add_plugin(self, plugin: object, name: str, distribution: str, version: str) -> None:
        """Register one plugin object and its methods, isolating any failure."""
        try:
            self.manager.register(plugin, name=name)
            self.manager.check_pending()
            methods = self._register_methods_of(plugin, name, distribution, version)
        except Exception as error:  # a broken plugin must not take the host down
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            self._fail(name, distribution, version, f"{type(error).__name__}: {error}", error)
            return
        self.methods.update({spec.name: spec for spec in methods})
        self.plugins[name] = PluginInfo(
            name, distribution, version, tuple(spec.name for spec in methods)
        )

    def _register_methods_of(
        self, plugin: object, name: str, distribution: str, version: str
    ) -> list[MethodSpec]:
        specs: list[MethodSpec] = []

        def register(spec: MethodSpec) -> None:
            if not isinstance(spec, MethodSpec):
                raise TypeError(f"register() takes a MethodSpec, got {type(spec).__name__}")
            taken = self.methods.get(spec.name) or next(
                (s for s in specs if s.name == spec.name), None
            )
            if taken is not None:
                raise ValueError(
                    f"method {spec.name!r} is already registered by plugin {taken.plugin!r}"
                )
            if "method" not in vars(spec.config_class):  # not inherited from another method
                spec.config_class.method = spec.name
            specs.append(
                dataclasses.replace(spec, plugin=name, distribution=distribution, version=version)
            )

        for impl in self.manager.hook.peftplug_register_methods.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(register=register)
        return specs

    def _discover(self) -> None:
        allowed = _env_names("PEFTPLUG_LOAD_PLUGINS")
        denied = _env_names("PEFTPLUG_DISABLE_PLUGINS") or set()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (allowed is not None and entry_point.name not in allowed) or (
                entry_point.name in denied
            ):
                continue
            if entry_point.name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            distribution = entry_point.dist.name if entry_point.dist else "unknown"
            version = entry_point.dist.version if entry_point.dist else "unknown"
            try:
                plugin = entry_point.load()
            except Exception as error:
                self._fail(entry_point.name, distribution, version, f"import failed: {error}", error)
                continue
            self.add_plugin(plugin, entry_point.name, distribution, version)

    def _fail(
        self, name: str, distribution: str, version: str, reason: str, error: Exception
    ) -> None:
        self.plugins[name] = PluginInfo(name, distribution, version, error=reason)
        if self.strict:
            raise PluginLoadError(f"plugin {name!r} ({distribution}) failed: {reason}") from error
        log.warning("peftplug: skipping plugin %r (%s): %s", name, distribution, reason)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def reset_host() -> None:
    """Forget the host so the next use rediscovers plugins (after installs or env changes)."""
    global _host
    _host = None
