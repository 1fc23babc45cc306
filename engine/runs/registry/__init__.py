"""The run registry: SQLite (WAL, busy timeout) through sqlite-utils, with a schema version and migrations. The only
package of Grove that reads or writes SQL.

Tables:
- ``runs``: one row per run; ``status`` moves queued -> running -> succeeded | failed | cancelled
  (queued -> cancelled too). Only the transitions in ``TRANSITIONS`` are allowed, each in one transaction.
  ``user``: who launched it (the signed-in person, or the local OS user for the command line).
- ``candidates``: every model a run produced (path, pass chain, parent, parameters, size, metrics).
- ``events``: what happened, in order (pass started/finished, training step/loss/lr, evaluation, log lines).
- ``workers``: worker heartbeats.
- ``device_activity``: what Grove does on each device (a run's passes, an evaluation, a chat answer) and the
  exclusive claims speed measurements take (engine/runs/devices.py); ``speed_pending``: speed measurements
  deferred until their device is free.
- ``access_log``: sign-ins, refusals and who launched, cancelled or retried what (docs/auth.md).

Connections are opened per operation, so the registry is safe to use from Streamlit's threads, the worker
and every runner process at once. Every write is a single transaction: a crash leaves the old state or the new.

``Registry`` is one class made of one part per job:
  schema    schema version, migrations, statuses and transitions, ``now``, ``new_run_id``
  base      connections, transactions, the upgrade on open
  runs      runs (create, transitions, claims, heartbeats, cancel), events, workers and notices
  results   candidates, evaluations and their fingerprints, chat feedback
  reads     the pages' read models: counts, durations, measured runs, Compare's columns, A/B votes
  devices   device activity, exclusive claims for speed measurements, the speed queue
  access    the access log: sign-ins, refusals, who launched, cancelled or retried what (docs/auth.md)
"""

from __future__ import annotations

from engine.runs.registry.access import AccessMixin
from engine.runs.registry.devices import DevicesMixin
from engine.runs.registry.reads import ReadsMixin
from engine.runs.registry.results import ResultsMixin
from engine.runs.registry.runs import RunsMixin
from engine.runs.registry.schema import ACTIVE, MIGRATIONS, SCHEMA_VERSION, STATUSES, TRANSITIONS, new_run_id, now

__all__ = ["ACTIVE", "MIGRATIONS", "SCHEMA_VERSION", "STATUSES", "TRANSITIONS", "Registry", "new_run_id", "now"]


class Registry(RunsMixin, ResultsMixin, ReadsMixin, DevicesMixin, AccessMixin):
    """All reads and writes of ``grove.db``. Cheap to create; holds no connection."""
