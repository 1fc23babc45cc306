"""Sign-in configuration, roles and the permission rule (engine.access), and ``grove up --host`` refusing to serve
beyond loopback without sign-in: the real CLI in a fresh interpreter, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import access
from engine.access import AccessError, Roles, can, load_roles, role_of

from .helpers import registry_at_schema

REPO = Path(__file__).resolve().parents[2]
GOOD_SECRETS = """\
[auth]
redirect_uri = "http://grove.example:8501/oauth2callback"
cookie_secret = "0123456789abcdef0123456789abcdef-long"
client_id = "grove"
client_secret = "s3cret"
server_metadata_url = "https://id.example/.well-known/openid-configuration"
"""


def test_loopback_addresses():
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"):
        assert access.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "grove.example"):
        assert not access.is_loopback(host), host


def test_auth_problems_name_the_file_and_the_key(tmp_path: Path):
    f = tmp_path / "secrets.toml"
    assert access.auth_problems(f) == [f"{f} does not exist"]
    f.write_text("[other]\nx = 1\n")
    assert access.auth_problems(f) == [f"{f} has no [auth] section"]
    f.write_text(GOOD_SECRETS.replace('client_secret = "s3cret"\n', "").replace("/oauth2callback", "/callback"))
    problems = access.auth_problems(f)
    assert f"{f}: [auth] has no client_secret" in problems
    assert any("must end with /oauth2callback" in p for p in problems)
    f.write_text("[auth\n")
    assert "not valid TOML" in access.auth_problems(f)[0]
    f.write_text(GOOD_SECRETS)
    assert access.auth_problems(f) == []
    # a named provider: its keys in [auth.NAME]
    f.write_text('[auth]\nredirect_uri = "http://h:1/oauth2callback"\ncookie_secret = "' + "x" * 40 + '"\n'
                 '[auth.okta]\nclient_id = "a"\nserver_metadata_url = "https://o/.well-known/openid-configuration"\n')
    assert access.auth_problems(f) == [f"{f}: [auth.okta] has no client_secret"]
    assert access.providers(f) == ["okta"]


def test_roles_file(tmp_path: Path):
    f = tmp_path / "roles.toml"
    assert load_roles(f) == Roles()  # no file: everyone signed in is a viewer
    f.write_text('default = "none"\nclaim = "groups"\n[users]\n"Bob@Example.com" = "member"\n'
                 '[claim_roles]\n"grove-admins" = "admin"\n')
    roles = load_roles(f)
    assert role_of({"email": "bob@example.com"}, roles)[0] == "member"  # e-mails compare case-blind
    assert role_of({"email": "ada@example.com", "groups": ["staff", "grove-admins"]}, roles)[0] == "admin"
    assert role_of({"email": "eve@example.com", "groups": ["staff"]}, roles)[0] is None  # default "none": refused
    # without claim_roles, the claim's values are role names; the highest wins; a listed person keeps the listed role
    roles = load_roles(_write(f, 'claim = "grove_role"\n[users]\n"bob@example.com" = "viewer"\n'))
    assert role_of({"sub": "u1", "grove_role": ["viewer", "member"]}, roles)[0] == "member"
    assert role_of({"email": "bob@example.com", "grove_role": "admin"}, roles)[0] == "viewer"
    assert role_of({"sub": "u2"}, roles)[0] == "viewer"


def _write(f: Path, text: str) -> Path:
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    "text, says",
    [
        ('[users]\n"bob@example.com" = "owner"\n', "[users] bob@example.com: 'owner' is not a role"),
        ('default = "superuser"\n', "default: 'superuser' is not a role"),
        ('defaults = "viewer"\n', "unknown key 'defaults'"),
        ('users = "bob"\n', "users must be a table"),
        ("claim = 3\n", "claim must be the name of a claim"),
        ("[users\n", "not valid TOML"),
    ],
)
def test_a_bad_roles_file_is_refused_with_its_file_and_key(tmp_path: Path, text: str, says: str):
    f = _write(tmp_path / "roles.toml", text)
    with pytest.raises(AccessError) as e:
        load_roles(f)
    assert str(f) in str(e.value) and says in str(e.value)


def test_who_may_do_what():
    assert not can("viewer", "launch") and can("viewer", "chat") and can("viewer", "vote")
    assert not can("viewer", "cancel", user="vic", owner="vic")
    assert can("member", "launch") and can("member", "cancel", user="bob", owner="bob")
    assert not can("member", "cancel", user="carol", owner="bob") and not can("member", "retry", user="c", owner="b")
    assert not can("member", "cancel", user="bob", owner=None)  # a run nobody recorded is the admin's
    assert can("admin", "cancel", user="ada", owner="bob") and can("admin", "admin")
    assert not can(None, "view") and not can("owner", "view")
    assert "only their own runs" in access.refusal("member", "cancel", user="carol", owner="bob")


def test_uploads_are_per_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GROVE_HOME", str(tmp_path))
    bob = access.upload_dir("bob@example.com")
    assert bob == tmp_path / "uploads" / "bob_at_example.com"
    assert access.slug("../../etc") == "etc"
    assert not access.foreign_upload(bob / "a.jsonl", "bob@example.com")
    assert access.foreign_upload(bob / "a.jsonl", "carol@example.com")
    assert not access.foreign_upload(tmp_path / "data" / "a.jsonl", "carol@example.com")


def _grove_up(tmp_path: Path, *args: str, secrets: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GROVE_HOME=str(tmp_path / "home"), GROVE_SECRETS=str(secrets),
               GROVE_ROLES=str(tmp_path / "roles.toml"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "engine.cli", "up", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_grove_up_beyond_loopback_refuses_without_sign_in(tmp_path: Path):
    missing = tmp_path / "secrets.toml"
    r = _grove_up(tmp_path, "--host", "0.0.0.0", "--port", "8999", secrets=missing)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to serve on 0.0.0.0" in r.stderr and f"{missing} does not exist" in r.stderr
    assert "[auth]" in r.stderr and "server_metadata_url" in r.stderr and "docs/auth.md" in r.stderr  # how to
    assert not (tmp_path / "home" / "grove.db").exists()  # nothing started
    # half a configuration: the missing key is named
    missing.write_text(GOOD_SECRETS.replace('cookie_secret = "0123456789abcdef0123456789abcdef-long"\n', ""))
    r = _grove_up(tmp_path, "--address", "192.168.7.7", secrets=missing)
    assert r.returncode == 2 and f"{missing}: [auth] has no cookie_secret" in r.stderr, r.stderr
    # configured, but the roles file is broken: said before serving
    missing.write_text(GOOD_SECRETS)
    (tmp_path / "roles.toml").write_text('default = "boss"\n')
    r = _grove_up(tmp_path, "--host", "0.0.0.0", secrets=missing)
    assert r.returncode == 2 and "default: 'boss' is not a role" in r.stderr, r.stderr


def test_a_schema_6_registry_opens_and_gains_who_did_what(fresh_home: Path):
    """Schema 6 -> 7: runs and feedback gain a nullable user (rows from before keep theirs empty), the access log
    appears; runs filter and count by person."""
    from engine.runs.registry import SCHEMA_VERSION, Registry

    path = fresh_home / "grove.db"
    db = registry_at_schema(fresh_home, 6)
    db["runs"].insert({"id": "r-old", "name": "old run", "status": "succeeded", "spec": "{}", "created_at": 1.0})
    db["feedback"].insert({"ts": 1.0, "rating": 1, "prompt": "p", "answer": "a"})
    db.conn.commit()
    db.conn.close()
    reg = Registry(path)
    assert reg.schema_version() == SCHEMA_VERSION == 7
    assert reg.get_run("r-old")["user"] is None and reg.feedback()[0]["user"] is None
    for i, who in enumerate(["bob@example.com", "carol@example.com", "bob@example.com"]):
        reg.create_run(spec_json="{}", spec_hash=f"h{i}", name=f"run {i}", olive_config="{}", gpus_wanted=0, user=who)
    assert [r["name"] for r in reg.list_runs(user="bob@example.com")] == ["run 2", "run 0"]
    assert reg.count_runs(user="carol@example.com") == {"queued": 1} and reg.count_runs()["queued"] == 3
    assert reg.people() == ["bob@example.com", "carol@example.com"]
    reg.record_access("eve@example.com", None, "sign-in", allowed=False, detail="not listed")
    reg.record_access("ada@example.com", "admin", "cancel", target="r-old")
    log = reg.access_log()
    assert [(r["user"], r["action"], r["allowed"]) for r in log] == [("ada@example.com", "cancel", True),
                                                                       ("eve@example.com", "sign-in", False)]


def test_the_command_line_records_the_local_user(demo: dict):
    """`grove submit`/the Python API: the run is the local administrator's (the OS user)."""
    from engine.runs.registry import Registry
    from engine.runs.submit import submit
    from engine.spec.recipes import lab_recipe
    from engine.spec.schema import parse_spec

    run = submit(parse_spec(lab_recipe(demo["model"], demo["dataset"])), reg=Registry())
    assert run["user"] == access.local_user() and run["user"]
