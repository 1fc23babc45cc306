"""Who uses this session and what they may do (engine.access; docs/auth.md): the sign-in state of the secrets file,
the signed-in person and their role (from the roles file or the provider's claim), the permission checks every write
of the other services modules makes (a refusal is recorded and raised), and the access log for an admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.services.core import TTL, _mtime, registry
from engine import access

PERSON = "grove_person"  # session state: the signed-in person as last resolved (user, role, why, roles file mtime)


@st.cache_data(ttl=TTL, show_spinner=False)
def _sign_in_state(path: str, mtime: float) -> tuple[str, list[str]]:
    if not Path(path).is_file():
        return "off", []
    problems = access.auth_problems(Path(path))
    if problems == [f"{path} has no [auth] section"]:
        return "off", []  # a secrets file that holds other secrets
    return ("broken", problems) if problems else ("on", [])


def sign_in_state() -> tuple[str, list[str]]:
    """("off", []) without sign-in configured (everyone is the local administrator), ("on", []) with it, or
    ("broken", problems) when the secrets file has an [auth] section that cannot work."""
    path = str(access.secrets_path())
    return _sign_in_state(path, _mtime(path))


def sign_in_providers() -> list[str]:
    """The named providers of the secrets file ([] for the unnamed default one)."""
    return access.providers()


@st.cache_data(ttl=TTL, show_spinner=False)
def _roles(path: str, mtime: float) -> access.Roles:
    return access.load_roles(Path(path))


def person() -> dict[str, Any]:
    """Who uses this session: {user, role, why, local}. Without sign-in: the local user as admin. Signed in: the
    identity the provider sent and the role the roles file (or its claim) gives, None when refused; a session's first
    resolution is recorded in the access log (a sign-in, or its refusal). Raises AccessError for a broken roles file."""
    if sign_in_state()[0] != "on":
        return {"user": access.local_user(), "role": "admin", "why": "sign-in is off: the local administrator",
                "local": True}
    if not st.user.is_logged_in:
        return {"user": "", "role": None, "why": "not signed in", "local": False}
    claims = st.user.to_dict()
    path = str(access.roles_path())
    mtime = _mtime(path)
    roles = _roles(path, mtime)
    who = access.identity(claims, roles)
    known = st.session_state.get(PERSON)
    if known and known["user"] == who and known["roles_mtime"] == mtime:
        return known
    role, why = access.role_of(claims, roles)
    me = {"user": who, "role": role, "why": why, "local": False, "roles_mtime": mtime}
    if not known or known["user"] != who or known["role"] != role:
        registry().record_access(who, role, "sign-in", allowed=role is not None, detail=why)
    st.session_state[PERSON] = me
    return me


def can(action: str, owner: str | None = None) -> bool:
    """Whether this session's person may ``action`` ("launch", "cancel", "retry", "chat", "vote", "admin"...), on a
    run of ``owner`` for cancel and retry."""
    me = person()
    return access.can(me["role"], action, user=me["user"], owner=owner)


def why_not(action: str, owner: str | None = None) -> str:
    me = person()
    return access.refusal(me["role"], action, user=me["user"], owner=owner)


def require(action: str, owner: str | None = None, target: str = "") -> dict[str, Any]:
    """This session's person, when they may ``action``; otherwise the refusal is recorded and raised (AccessError).
    With sign-in on, the allowed actions are recorded too (who launched, cancelled or retried what)."""
    me = person()
    if not access.can(me["role"], action, user=me["user"], owner=owner):
        message = access.refusal(me["role"], action, user=me["user"], owner=owner)
        registry().record_access(me["user"], me["role"], action, target=target, allowed=False, detail=message)
        raise access.AccessError(message)
    return me


def record(me: dict[str, Any], action: str, target: str) -> None:
    if not me["local"]:
        registry().record_access(me["user"], me["role"], action, target=target)


def own_inputs(me: dict[str, Any], draft_paths: dict[str, str]) -> None:
    """With sign-in on, a draft may not point into another person's uploads (field and path named)."""
    if me["local"]:
        return
    for field, p in draft_paths.items():
        if p and access.foreign_upload(p, me["user"]):
            raise access.AccessError(f"{field}: {p} is another person's upload; upload your own copy")


def access_log(limit: int = 200) -> list[dict[str, Any]]:
    """The access log newest first, for an admin: when, user, role, action, target, allowed, detail."""
    import time as _time

    if not can("admin"):
        return []
    return [{**r, "when": _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(r["ts"]))}
            for r in registry().access_log(limit=limit)]
