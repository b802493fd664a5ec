"""What the service runs beside deciding: the Prometheus endpoint, Home Assistant
discovery, the live viewer.

A hook is started before the service publishes anything, sees every decision just
before it is published, and is stopped after the last metrics, while the publisher
is still open. :func:`service_hooks` builds the hooks a configuration asks for and
imports their modules only then: without ``--metrics-port`` the runtime never
imports prometheus_client.

A hook that also has the :class:`EventWatcher` method ``events`` sees the events of
each stream as compute takes them, on the event loop (the live viewer draws them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from spikecast.runtime.payload import Decision
    from spikecast.runtime.service import Service


class ServiceHook(Protocol):
    async def start(self) -> None:
        """Before the service publishes anything; an error here ends the run."""
        ...

    async def decision(self, decision: Decision) -> None:
        """A decision, just before it is published."""
        ...

    async def stop(self) -> None:
        """After the last metrics; the publisher is still open."""
        ...


@runtime_checkable
class EventWatcher(Protocol):
    def events(self, stream: str, events: np.ndarray, t_us: int | None) -> None:
        """Events of ``stream`` (sensor coordinates, EVENT_DTYPE) as compute takes them,
        with the watermark they came with; on the event loop, so keep it short."""
        ...


def service_hooks(service: Service) -> list[ServiceHook]:
    """The hooks ``service.cfg`` asks for (none by default)."""
    cfg = service.cfg
    hooks: list[ServiceHook] = []
    if cfg.metrics_port is not None:
        from spikecast.runtime.prom import PrometheusExporter

        hooks.append(PrometheusExporter(service))
    if cfg.ha_discovery:
        from spikecast.runtime.mqtt.homeassistant import HomeAssistantDiscovery

        hooks.append(
            HomeAssistantDiscovery(
                service.publisher,
                cfg.device,
                prefix=cfg.ha_prefix,
                classes=service.network.class_names,
                model=cfg.model.name,
            )
        )
    if cfg.view is not None:
        from spikecast.runtime.view import LiveViewer

        hooks.append(LiveViewer(service))
    return hooks


__all__ = ["EventWatcher", "ServiceHook", "service_hooks"]
