"""The plugin host: entry-point discovery, per-plugin isolation, allow and deny lists."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import re
from collections.abc import Sequence
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


def _normalized(distribution: str) -> str:
    """A distribution name as pip compares it (PEP 503): ``Lora_Fork`` is ``lora-fork``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _named(entry_point: importlib.metadata.EntryPoint, names: set[str]) -> bool:
    """Whether ``names`` holds the entry point's own name or its distribution's."""
    distribution = entry_point.dist.name if entry_point.dist else None
    return entry_point.name in names or (
        distribution is not None and _normalized(distribution) in {_normalized(n) for n in names}
    )


def _info(entry_point: importlib.metadata.EntryPoint) -> PluginInfo:
    if entry_point.dist is None:
        return PluginInfo(entry_point.name, "unknown", "unknown")
    return PluginInfo(entry_point.name, entry_point.dist.name, entry_point.dist.version)


def _skip_reason(entry_point: importlib.metadata.EntryPoint, wanted: bool) -> str:
    """Why an installed plugin was not loaded, naming the variable to change."""
    info = _info(entry_point)
    variable = (
        f"PEFTPLUG_DISABLE_PLUGINS={os.environ.get('PEFTPLUG_DISABLE_PLUGINS')!r} names it"
        if wanted
        else f"PEFTPLUG_LOAD_PLUGINS={os.environ.get('PEFTPLUG_LOAD_PLUGINS')!r} leaves it out"
    )
    return (
        f"method {entry_point.name!r} is installed ({info.distribution} {info.version}) but "
        f"skipped: {variable}; change that variable to use it"
    )


def _conflict(subject: str, claimants: Sequence[PluginInfo], skip: Sequence[str]) -> str:
    """Why no claimant of a shared name is loaded, and the two ways out."""
    named = " and ".join(f"plugin {c.name!r} ({c.distribution} {c.version})" for c in claimants)
    ways = " or ".join(f"PEFTPLUG_DISABLE_PLUGINS={key}" for key in skip)
    return (
        f"{subject} is claimed by {named}, so none of them is loaded: uninstall one, "
        f"or skip one with {ways}"
    )


class PluginHost:
    """Owns the pluggy manager and the method registry.

    A plugin that fails to import, names a hook that does not exist, or fails to register is
    reported by name and skipped; ``PEFTPLUG_STRICT_PLUGINS=1`` makes that an error. Two
    distributions with one entry-point name, or two plugins that register one method name, are
    all refused, each with an error naming the others: which would win depends on the order of
    sys.path and of directory listings, so none does. ``PEFTPLUG_LOAD_PLUGINS``
    (comma-separated) loads only the named entry points or distributions and
    ``PEFTPLUG_DISABLE_PLUGINS`` skips them.
    """

    def __init__(self, *, discover: bool = True) -> None:
        self.manager = pluggy.PluginManager("peftplug")
        self.manager.add_hookspecs(hookspecs)
        self.methods: dict[str, MethodSpec] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.contested: dict[str, list[PluginInfo]] = {}  # method name -> plugins refused for it
        self.skipped: dict[str, str] = {}  # entry-point name -> why the environment skipped it
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
        reason = self.unavailable_reason(name)
        if reason is not None:
            raise PluginNotFoundError(reason)
        installed = ", ".join(sorted(self.methods)) or "none"
        broken = [p.name for p in self.plugins.values() if p.error]
        hint = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
        raise PluginNotFoundError(
            f"unknown plugin {name!r}{did_you_mean(name, self.methods)}; installed: {installed} "
            f"(pip install peftplug-<name> to add one){hint}"
        )

    def unavailable_reason(self, name: str) -> str | None:
        """Why the installed method ``name`` is not usable (skipped, contested, failed), if so."""
        if name in self.contested:
            return self._contest(name)
        if name in self.skipped:
            return self.skipped[name]
        failed = self.plugins.get(name)
        if failed is not None and failed.error:
            return (
                f"method {name!r} is not available: plugin {name!r} failed to load: {failed.error}"
            )
        return None

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
        shared = [s.name for s in methods if s.name in self.methods or s.name in self.contested]
        if shared:
            self.manager.unregister(plugin)
            self._refuse_shared(shared, PluginInfo(name, distribution, version))
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
            if any(s.name == spec.name for s in specs):
                raise ValueError(f"method {spec.name!r} is registered twice")
            if "method" not in vars(spec.config_class):  # not inherited from another method
                spec.config_class.method = spec.name
            specs.append(
                dataclasses.replace(spec, plugin=name, distribution=distribution, version=version)
            )

        for impl in self.manager.hook.peftplug_register_methods.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(register=register)
        return specs

    def _refuse_shared(self, shared: list[str], newcomer: PluginInfo) -> None:
        """Refuse ``newcomer`` and withdraw the loaded plugins that registered its method names."""
        owners = {m: self.plugins[self.methods[m].plugin] for m in shared if m in self.methods}
        for method in shared:
            claimants = self.contested.setdefault(method, [])
            claimants.extend([owners[method], newcomer] if method in owners else [newcomer])
        reasons = {method: self._contest(method) for method in shared}
        for method, owner in owners.items():
            if self.manager.has_plugin(owner.name):  # an owner of two shared names goes once
                self.manager.unregister(name=owner.name)
                for name in owner.methods:
                    self.methods.pop(name, None)
                self._fail(owner.name, owner.distribution, owner.version, reasons[method])
        reason = "; ".join(reasons.values())
        self._fail(newcomer.name, newcomer.distribution, newcomer.version, reason)

    def _contest(self, method: str) -> str:
        claimants = self.contested[method]
        return _conflict(f"method {method!r}", claimants, [c.name for c in claimants])

    def _discover(self) -> None:
        allowed = _env_names("PEFTPLUG_LOAD_PLUGINS")
        denied = _env_names("PEFTPLUG_DISABLE_PLUGINS") or set()
        claims: dict[str, list[importlib.metadata.EntryPoint]] = {}
        # importlib.metadata yields each distribution once, even when two sys.path entries hold
        # it, so two claims on one name always come from two different distributions.
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            wanted = allowed is None or _named(entry_point, allowed)
            if wanted and not _named(entry_point, denied):
                claims.setdefault(entry_point.name, []).append(entry_point)
            else:
                self.skipped[entry_point.name] = _skip_reason(entry_point, wanted)
        for name, entry_points in claims.items():
            if len(entry_points) == 1:
                self._load(entry_points[0])
                continue
            claimants = sorted((_info(e) for e in entry_points), key=lambda c: c.distribution)
            skips = [claimant.distribution for claimant in claimants]
            reason = _conflict(f"entry point {name!r}", claimants, skips)
            self._fail(
                name,
                ", ".join(skips),
                ", ".join(claimant.version for claimant in claimants),
                reason,
            )

    def _load(self, entry_point: importlib.metadata.EntryPoint) -> None:
        info = _info(entry_point)
        try:
            plugin = entry_point.load()
        except Exception as error:
            self._fail(info.name, info.distribution, info.version, f"import failed: {error}", error)
            return
        self.add_plugin(plugin, info.name, info.distribution, info.version)

    def _fail(
        self,
        name: str,
        distribution: str,
        version: str,
        reason: str,
        error: Exception | None = None,
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
