"""Observability hooks, and Prometheus metrics behind the ``[metrics]`` extra.

The provider, the store and the middleware report what happens to a ``SessionObserver``;
the default one does nothing, so the hooks cost a method call. ``PrometheusObserver``
turns them into counters and histograms (``pip install asgi_mysql_session[metrics]``).
"""

from __future__ import annotations

from typing import Any


class SessionObserver:
    """Subclass and override what you need; every hook is a no-op here."""

    def session_loaded(self) -> None:
        """A presented id matched a live session."""

    def unknown_id(self) -> None:
        """An unknown, expired or malformed id was presented (a spike means guessing)."""

    def session_saved(self, result: str) -> None:
        """A release wrote: ``created``, ``updated``, ``touched`` or ``destroyed``."""

    def session_created(self, anonymous: bool) -> None:
        """A new row was stored; ``anonymous`` when it has no owner (nobody logged in).

        A steady stream of anonymous creations means some route writes the session for
        every visitor (or someone is filling the table): alert on its rate.
        """

    def sessions_destroyed(self, count: int) -> None:
        """Rows deleted by destroy/destroy_owner (logouts)."""

    def write_conflict(self) -> None:
        """A conditional write lost to a concurrent one and was merged and retried."""

    def sweep(self, rows: int, seconds: float) -> None:
        """An expiry sweep finished."""

    def database_error(self, kind: str) -> None:
        """A statement or connection failed (``timeout``, ``connection``, ``statement``)."""

    def statement(self, kind: str, seconds: float) -> None:
        """A statement ran (``select``, ``insert``, ``update``, ``delete``)."""

    def failover(self, host: str) -> None:
        """A database host (``host:port``) of a several-host DSN was marked down: new
        connections go to the others until it answers again. Once per change, not per request."""


class PrometheusObserver(SessionObserver):
    """Session metrics for prometheus_client; pass ``registry`` to avoid the global one."""

    def __init__(self, registry: Any = None, namespace: str = "asgi_mysql_session") -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Histogram
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "PrometheusObserver needs prometheus-client: pip install asgi_mysql_session[metrics]"
            ) from exc
        registry = REGISTRY if registry is None else registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        self._loaded = counter("sessions_loaded", "Sessions read for a presented id")
        self._unknown = counter("unknown_ids", "Unknown, expired or malformed ids presented")
        self._saved = counter("session_writes", "Session writes by outcome", ("result",))
        self._created = counter(
            "sessions_created", "New sessions stored, by whether they have an owner", ("anonymous",)
        )
        self._destroyed = counter("sessions_destroyed", "Sessions ended by destroy or destroy_owner")
        self._conflicts = counter("write_conflicts", "Conditional writes merged and retried")
        self._swept = counter("swept_rows", "Expired rows deleted by sweeps")
        self._errors = counter("database_errors", "Database failures by kind", ("kind",))
        self._failovers = counter(
            "failovers", "Database hosts marked down (new connections went to the others)", ("host",)
        )
        self._sweeps = Histogram(
            "sweep_seconds", "Duration of expiry sweeps", namespace=namespace, registry=registry
        )
        self._latency = Histogram(
            "statement_seconds",
            "Statement latency by kind",
            ("kind",),
            namespace=namespace,
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def session_loaded(self) -> None:
        self._loaded.inc()

    def unknown_id(self) -> None:
        self._unknown.inc()

    def session_saved(self, result: str) -> None:
        self._saved.labels(result).inc()

    def session_created(self, anonymous: bool) -> None:
        self._created.labels("true" if anonymous else "false").inc()

    def sessions_destroyed(self, count: int) -> None:
        self._destroyed.inc(count)

    def write_conflict(self) -> None:
        self._conflicts.inc()

    def sweep(self, rows: int, seconds: float) -> None:
        self._swept.inc(rows)
        self._sweeps.observe(seconds)

    def database_error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def statement(self, kind: str, seconds: float) -> None:
        self._latency.labels(kind).observe(seconds)

    def failover(self, host: str) -> None:
        self._failovers.labels(host).inc()
