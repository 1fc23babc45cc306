"""The registry's access log: sign-ins (allowed or refused), refused actions, and with sign-in on the launches,
cancels and retries (who, what, on which run, when; engine.access and docs/auth.md)."""

from __future__ import annotations

from typing import Any

from engine.runs.registry.base import RegistryBase
from engine.runs.registry.schema import now


class AccessMixin(RegistryBase):
    def record_access(self, user: str, role: str | None, action: str, *, target: str = "", allowed: bool = True,
                      detail: str = "") -> None:
        """One line of the access log: a sign-in (allowed or refused), a refused action, an action on a run."""
        with self.tx() as db:
            db["access_log"].insert({"ts": now(), "user": user, "role": role or "", "action": action,
                                     "target": target, "allowed": int(allowed), "detail": detail})

    def access_log(self, *, limit: int = 200, user: str | None = None) -> list[dict[str, Any]]:
        """The access log newest first (of one person when given); ``allowed`` as a bool."""
        sql, args = "select * from access_log", []
        if user:
            sql, args = sql + " where user = ?", [user]
        with self.db() as db:
            rows = list(db.query(sql + " order by id desc limit ?", [*args, limit]))
        return [{**r, "allowed": bool(r["allowed"])} for r in rows]
