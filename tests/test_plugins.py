"""The backend registry: built-ins without metadata, registration, entry points, install hints."""

from __future__ import annotations

import pytest

from flowyml_lite import plugins
from flowyml_lite.errors import PluginError, PluginNotInstalledError


class TestBuiltins:
    @pytest.mark.parametrize(
        "kind,name,cls",
        [
            ("cron", "native", "NativeEngine"),
            ("timezones", "zoneinfo", "ZoneinfoProvider"),
            ("stores", "memory", "MemoryStore"),
            ("stores", "sqlite", "SQLiteStore"),
            ("locks", "file", "FileLock"),
            ("locks", "local", "LocalLock"),
        ],
    )
    def test_each_builtin_loads_by_name(self, kind: str, name: str, cls: str) -> None:
        assert plugins.get(kind, name).__name__ == cls

    def test_available_lists_builtins_and_extras(self) -> None:
        assert {"native", "croniter"} <= set(plugins.available("cron"))
        assert {"memory", "sqlite", "sqlalchemy"} <= set(plugins.available("stores"))


class TestRegistration:
    def test_a_registered_object_is_returned_as_is(self) -> None:
        marker = object()
        plugins.register("locks", "test-marker", marker)
        assert plugins.get("locks", "test-marker") is marker
        assert "test-marker" in plugins.available("locks")

    def test_an_unknown_kind_is_refused_with_the_kinds(self) -> None:
        with pytest.raises(PluginError, match="the kinds are cron, timezones, stores, locks"):
            plugins.register("queues", "x", object())

    def test_an_unknown_name_lists_what_is_available(self) -> None:
        with pytest.raises(PluginError, match=r"no stores backend named 'mongo'; available: .*sqlite"):
            plugins.get("stores", "mongo")


class TestEntryPoints:
    def test_the_extras_are_found_through_package_metadata(self) -> None:
        pytest.importorskip("croniter")
        from importlib import metadata

        eps = metadata.entry_points()
        group = (
            eps.select(group="flowyml_lite.cron")
            if hasattr(eps, "select")
            else eps.get("flowyml_lite.cron", [])
        )
        names = {ep.name for ep in group}
        if "croniter" not in names:
            pytest.skip("flowyml-lite is not installed with its metadata in this environment")
        assert plugins.get("cron", "croniter").__name__ == "CroniterEngine"


class TestMissingExtras:
    def test_a_known_backend_without_its_package_says_what_to_pip_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import sys

        monkeypatch.setitem(sys.modules, "redis", None)  # as if the package were not installed
        monkeypatch.delitem(sys.modules, "flowyml_lite_ext.redis_lock", raising=False)
        monkeypatch.setitem(plugins._registry["locks"], "redis", "flowyml_lite_ext.redis_lock:RedisLock")
        with pytest.raises(PluginNotInstalledError, match=r"pip install 'flowyml-lite\[redis\]'"):
            plugins.get("locks", "redis")
