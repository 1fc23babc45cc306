"""Who may do what: sign-in configuration, roles, and the permission rule every entrance applies.

Sign-in is OpenID Connect through Streamlit's own ``st.login`` (Authlib), configured in the ``[auth]`` section of a
``secrets.toml`` exactly as Streamlit documents it. Grove reads that file too (``secrets_path()``), only to check it
before serving on a non-loopback address (``grove up --host 0.0.0.0``) and to say what is missing.

Roles (docs/auth.md):

    viewer   sees runs, candidates and chat (chats, votes and gives feedback)
    member   a viewer who also launches runs and cancels / retries their own
    admin    everything, others' runs included

A person's role comes from the roles file (``GROVE_HOME/roles.toml``, or the file ``GROVE_ROLES`` names), and else
from a claim of the identity provider when the file names one::

    default = "viewer"                 # anyone signed in who is not listed; "none" refuses them
    claim = "groups"                   # optional: the ID-token claim that carries roles (a string or a list)
    [users]                            # by e-mail (or the claim in `identity`, default: email, else sub)
    "ada@example.com" = "admin"
    "bob@example.com" = "member"
    [claim_roles]                      # optional: claim value -> role; without it the values are role names
    "ml-team" = "member"

A listed person gets the listed role; otherwise the highest role their claim gives; otherwise ``default``.
The command line on the server machine is the local administrator's tool: it acts as ``local_user()`` with
every right (whoever can run ``grove`` there can read the registry file anyway).
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import GroveError

ROLES = ("viewer", "member", "admin")
NONE = "none"  # a `default` that refuses anyone not listed
_RANK = {r: i for i, r in enumerate(ROLES)}
AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")

# What each role may do. "own" actions on a run also need the run to be the person's (or the role to be admin).
_ALLOWED = {
    "viewer": {"view", "chat", "vote"},
    "member": {"view", "chat", "vote", "launch", "upload", "cancel_own", "retry_own"},
    "admin": {"view", "chat", "vote", "launch", "upload", "cancel_own", "retry_own", "cancel_any", "retry_any",
              "admin"},
}


class AccessError(GroveError):
    """A signed-in person asked for something their role does not allow, or the sign-in set-up is wrong."""


def local_user() -> str:
    """Who the command line acts as: the local OS user (the local administrator), else "local"."""
    try:
        return getpass.getuser() or "local"
    except Exception:  # noqa: BLE001 - no passwd entry in a container: still someone local
        return "local"


# -- sign-in configuration (Streamlit's secrets.toml) -------------------------------------------------------------
def secrets_path() -> Path:
    """The secrets.toml the UI reads: ``GROVE_SECRETS``, else ``.streamlit/secrets.toml`` in the repository."""
    env = os.environ.get("GROVE_SECRETS")
    return Path(env).expanduser().resolve() if env else paths.REPO_ROOT / ".streamlit" / "secrets.toml"


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise AccessError(f"{path}: the {what} is not valid TOML: {e}") from None
    except OSError as e:
        raise AccessError(f"{path}: the {what} cannot be read: {e.strerror}") from None


def auth_problems(path: Path | None = None) -> list[str]:
    """What keeps sign-in from working with ``path`` (default ``secrets_path()``); empty when it is configured."""
    path = path or secrets_path()
    if not path.is_file():
        return [f"{path} does not exist"]
    try:
        auth = _read_toml(path, "secrets file").get("auth")
    except AccessError as e:
        return [str(e)]
    if not isinstance(auth, dict):
        return [f"{path} has no [auth] section"]
    problems = [f"{path}: [auth] has no {k}" for k in AUTH_KEYS if not auth.get(k)]
    if auth.get("redirect_uri") and not str(auth["redirect_uri"]).rstrip("/").endswith("/oauth2callback"):
        problems.append(f"{path}: [auth] redirect_uri must end with /oauth2callback (it is {auth['redirect_uri']!r})")
    if auth.get("cookie_secret") and len(str(auth["cookie_secret"])) < 32:
        problems.append(f"{path}: [auth] cookie_secret is shorter than 32 characters (use a long random one)")
    providers = {k: v for k, v in auth.items() if isinstance(v, dict) and k != "client_kwargs"}
    if not providers:  # the unnamed default provider: its keys sit in [auth] itself
        problems += [f"{path}: [auth] has no {k}" for k in PROVIDER_KEYS if not auth.get(k)]
    for name, sec in providers.items():
        problems += [f"{path}: [auth.{name}] has no {k}" for k in PROVIDER_KEYS if not sec.get(k)]
    return problems


def providers(path: Path | None = None) -> list[str]:
    """The provider names ``st.login`` takes: [] for the unnamed default provider, else each [auth.NAME]."""
    try:
        auth = _read_toml(path or secrets_path(), "secrets file").get("auth") or {}
    except AccessError:
        return []
    return [k for k, v in auth.items() if isinstance(v, dict) and k != "client_kwargs"]


HOW_TO_CONFIGURE = """\
Sign-in is needed to serve Grove beyond this machine. Configure OpenID Connect in {path}:

  [auth]
  redirect_uri = "http://YOUR-HOST:{port}/oauth2callback"
  cookie_secret = "<a long random string: python -c 'import secrets; print(secrets.token_urlsafe(32))'>"
  client_id = "<from your identity provider>"
  client_secret = "<from your identity provider>"
  server_metadata_url = "https://YOUR-PROVIDER/.well-known/openid-configuration"

and give people roles in {roles} (docs/auth.md). GROVE_SECRETS names another secrets file."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_serving(host: str, port: int, path: Path | None = None) -> None:
    """Refuse to serve on ``host`` when it is not loopback and sign-in is not configured (says how to configure it)."""
    if is_loopback(host):
        return
    path = path or secrets_path()
    problems = auth_problems(path)
    if problems:
        raise AccessError(
            f"refusing to serve on {host}: anyone who reaches port {port} could launch code on this machine, and "
            f"sign-in is not configured ({'; '.join(problems)})",
            hint=HOW_TO_CONFIGURE.format(path=path, port=port, roles=roles_path()),
        )
    load_roles()  # a broken roles file is said now, not on the first sign-in


# -- roles -----------------------------------------------------------------------------------------------------------
def roles_path() -> Path:
    env = os.environ.get("GROVE_ROLES")
    return Path(env).expanduser().resolve() if env else paths.home() / "roles.toml"


@dataclass(frozen=True)
class Roles:
    users: dict[str, str] = field(default_factory=dict)  # identity (lower case) -> role
    default: str = "viewer"
    claim: str | None = None
    claim_roles: dict[str, str] = field(default_factory=dict)
    identity: str = "email"
    source: str = "(no roles file)"


def _role(value: Any, where: str, *, allow_none: bool = False) -> str:
    ok = ROLES + ((NONE,) if allow_none else ())
    if not isinstance(value, str) or value.strip().lower() not in ok:
        raise AccessError(f"{where}: {value!r} is not a role (one of {', '.join(ok)})")
    return value.strip().lower()


def load_roles(path: Path | None = None) -> Roles:
    """The roles file (default ``roles_path()``); no file means everyone signed in is a viewer."""
    path = path or roles_path()
    if not path.is_file():
        return Roles()
    data = _read_toml(path, "roles file")
    unknown = sorted(set(data) - {"default", "claim", "users", "claim_roles", "identity"})
    if unknown:
        raise AccessError(f"{path}: unknown key {unknown[0]!r} (the keys are default, claim, identity, [users], "
                          "[claim_roles])")
    for section in ("users", "claim_roles"):
        if section in data and not isinstance(data[section], dict):
            raise AccessError(f"{path}: {section} must be a table ([{section}] with name = \"role\" lines)")
    users = {str(k).strip().lower(): _role(v, f"{path}: [users] {k}") for k, v in (data.get("users") or {}).items()}
    claim_roles = {str(k): _role(v, f"{path}: [claim_roles] {k}") for k, v in (data.get("claim_roles") or {}).items()}
    for key in ("claim", "identity"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise AccessError(f"{path}: {key} must be the name of a claim, such as \"groups\" or \"email\"")
    return Roles(
        users=users,
        default=_role(data.get("default", "viewer"), f"{path}: default", allow_none=True),
        claim=data.get("claim"),
        claim_roles=claim_roles,
        identity=data.get("identity", "email"),
        source=str(path),
    )


def identity(claims: dict[str, Any], roles: Roles | None = None) -> str:
    """The name Grove records for a signed-in person: the roles file's identity claim (email), else sub."""
    key = (roles or Roles()).identity
    for k in (key, "email", "preferred_username", "sub"):
        v = claims.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    raise AccessError("the identity provider sent no email, preferred_username or sub claim: Grove cannot tell who "
                      "this is")


def role_of(claims: dict[str, Any], roles: Roles) -> tuple[str | None, str]:
    """(role or None when refused, where it came from) for the ID-token ``claims`` of a signed-in person."""
    who = identity(claims, roles).lower()
    if who in roles.users:
        return roles.users[who], f"listed in {roles.source}"
    if roles.claim and roles.claim in claims:
        raw = claims[roles.claim]
        values = [raw] if isinstance(raw, str) else [str(v) for v in raw] if isinstance(raw, list) else []
        found = [roles.claim_roles.get(v, v.strip().lower()) for v in values]
        found = [r for r in found if r in _RANK]
        if found:
            return max(found, key=_RANK.__getitem__), f"claim {roles.claim!r} of the identity provider"
    if roles.default == NONE:
        return None, f"not listed in {roles.source}, and its default is \"none\""
    return roles.default, f"the default role of {roles.source}"


def can(role: str | None, action: str, *, user: str | None = None, owner: str | None = None) -> bool:
    """Whether ``role`` may do ``action`` ("launch", "cancel", "retry", "chat", "vote", "upload", "admin", "view").
    Cancel and retry are allowed on one's own runs (``owner == user``) for members, on any run for admins."""
    if role not in _ALLOWED:
        return False
    allowed = _ALLOWED[role]
    if action in ("cancel", "retry"):
        if f"{action}_any" in allowed:
            return True
        return f"{action}_own" in allowed and owner is not None and owner == user
    return action in allowed


def refusal(role: str | None, action: str, *, user: str | None = None, owner: str | None = None) -> str:
    """The message for a refused action, in Grove's words."""
    if role is None:
        return "you are not signed in with a role in Grove"
    if action in ("cancel", "retry") and role == "member":
        return f"a member may {action} only their own runs; this run is {owner or 'someone else'}'s (ask an admin)"
    return f"a {role} may not {action} (ask an admin for the member role)"


# -- per-person folders --------------------------------------------------------------------------------------------
def slug(user: str) -> str:
    """A folder name for a person (ada@example.com -> ada_at_example.com)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", user.replace("@", "_at_")).strip("._") or "someone"
    return s[:80]


def upload_dir(user: str | None) -> Path:
    """Where a person's uploads go: GROVE_HOME/uploads/<person> (the local user's own folder for the CLI)."""
    return paths.home() / "uploads" / slug(user or local_user())


def foreign_upload(path: str | Path, user: str | None) -> bool:
    """Whether ``path`` is another person's upload (another folder under GROVE_HOME/uploads)."""
    root = (paths.home() / "uploads").resolve()
    p = Path(str(path)).expanduser().resolve()
    if root not in p.parents:
        return False
    return not (p == upload_dir(user).resolve() or upload_dir(user).resolve() in p.parents)
