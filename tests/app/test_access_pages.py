"""A team's Grove through the router and the services (AppTest, a real registry, a real secrets file with [auth] and
a real roles file; ``at.user`` is what Streamlit's ``st.user`` reads after an OpenID Connect sign-in, which
tests/e2e/test_auth.py does for real in a browser). What each role sees and may do, the refusals recorded, the
Runs page's person filter, uploads in the uploader's own folder, and sessions that do not share state."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.runs.registry import Registry

from .conftest import MAIN, UI_TIMEOUT, add_run

SECRETS = """\
[auth]
redirect_uri = "http://localhost:8501/oauth2callback"
cookie_secret = "a-test-cookie-secret-that-is-long-enough"
client_id = "grove"
client_secret = "s3cret"
server_metadata_url = "http://localhost:9/.well-known/openid-configuration"
"""
ROLES = """\
default = "viewer"
[users]
"bob@example.com" = "member"
"carol@example.com" = "member"
"ada@example.com" = "admin"
"""


@pytest.fixture
def team(ui_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "secrets.toml").write_text(SECRETS)
    (tmp_path / "roles.toml").write_text(ROLES)
    monkeypatch.setenv("GROVE_SECRETS", str(tmp_path / "secrets.toml"))
    monkeypatch.setenv("GROVE_ROLES", str(tmp_path / "roles.toml"))
    return ui_home


def signed_in(email: str | None, **query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT)
    at.user = {"is_logged_in": False} if email is None else {"is_logged_in": True, "email": email, "name": email}
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page(at: AppTest, file: str) -> AppTest:
    at.switch_page(f"../pages/{file}").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def words(at: AppTest) -> str:
    return "\n".join(str(e.value).replace("\\", "") for kind in ("title", "markdown", "caption", "error", "info", "warning")
                     for e in getattr(at, kind))


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, [b.label for b in at.button]
    return found[0]


def test_without_a_sign_in_only_the_sign_in_button(team: Path):
    at = signed_in(None)
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Running" not in words(at) and not at.dataframe and not at.sidebar.button


def test_each_role_sees_its_pages_and_buttons(team: Path):
    run = add_run(team, "bob's run")  # queued, launched by the local user (the test process)
    Registry().update_run(run["id"], user="bob@example.com")
    # a viewer (not listed: the default): Runs without Cancel, Home without launch, no Workflow page
    at = signed_in("vic@example.com")
    assert "vic@example.com · viewer" in [str(c.value).replace("\\", "") for c in at.sidebar.caption]
    assert button(at, "Launch the demo workflow").disabled
    with pytest.raises(Exception, match="workflow"):  # not in the viewer's navigation
        page(at, "workflow.py")
    at = signed_in("vic@example.com", run=run["id"])
    page(at, "runs.py")
    assert button(at, "Cancel").disabled and button(at, "Retry").disabled
    # carol, a member: bob's run is not hers to cancel
    at = signed_in("carol@example.com", run=run["id"])
    page(at, "runs.py")
    assert button(at, "Cancel").disabled and "only their own runs" in words(at)
    assert not button(at, "Clone into Workflow").disabled
    # bob may; so may ada, an admin
    for who in ("bob@example.com", "ada@example.com"):
        at = signed_in(who, run=run["id"])
        page(at, "runs.py")
        assert not button(at, "Cancel").disabled, who
    button(at, "Cancel").click().run()
    assert Registry().get_run(run["id"])["status"] == "cancelled"
    log = Registry().access_log()
    assert {(r["user"], r["role"]) for r in log if r["action"] == "sign-in"} >= {
        ("vic@example.com", "viewer"), ("carol@example.com", "member"), ("ada@example.com", "admin")}
    assert any(r["user"] == "ada@example.com" and r["action"] == "cancel" and r["target"] == run["id"] for r in log)


def _act(script: str, who: str) -> AppTest:
    """Run ``script`` (services calls) as ``who`` in a session of its own; returns the AppTest."""
    at = AppTest.from_string(script, default_timeout=UI_TIMEOUT)
    at.user = {"is_logged_in": True, "email": who}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


ACT = """
import streamlit as st
from app import services
from engine.errors import GroveError
try:
    st.write(repr({call}))
except GroveError as e:
    st.error(str(e))
"""


def test_the_services_refuse_what_the_role_does_not_allow_and_record_it(team: Path):
    """The pages hide what a role may not do; the services refuse it anyway (a page left open after a role change,
    a crafted request), and the refusal is in the access log."""
    run = add_run(team, "bob's run")
    Registry().update_run(run["id"], user="bob@example.com")
    at = _act(ACT.format(call=f"services.cancel({run['id']!r})"), "carol@example.com")
    assert "a member may cancel only their own runs" in at.error[0].value
    at = _act(ACT.format(call="services.launch_demo()"), "vic@example.com")
    assert "a viewer may not launch" in at.error[0].value
    assert Registry().get_run(run["id"])["status"] == "queued" and len(Registry().list_runs()) == 1
    refused = [(r["user"], r["action"], r["target"]) for r in Registry().access_log() if not r["allowed"]]
    assert ("carol@example.com", "cancel", run["id"]) in refused and ("vic@example.com", "launch", "") in refused
    # a member launches: the runs are recorded as theirs
    _act(ACT.format(call="services.launch_demo()"), "bob@example.com")
    assert {r["user"] for r in Registry().list_runs()} == {"bob@example.com"}


def test_runs_page_filters_by_person(team: Path):
    for name, who in (("bob one", "bob@example.com"), ("carol one", "carol@example.com"), ("bob two", "bob@example.com")):
        Registry().update_run(add_run(team, name)["id"], user=who)
    at = page(signed_in("ada@example.com", by="carol@example.com"), "runs.py")
    assert [r["name"] for r in at.dataframe[0].value.to_dict("records")] == ["carol one"]
    assert at.selectbox[0].value == "carol@example.com"
    at.selectbox[0].select("bob@example.com").run()
    assert sorted(r["name"] for r in at.dataframe[0].value.to_dict("records")) == ["bob one", "bob two"]
    assert at.query_params["by"] in ("bob@example.com", ["bob@example.com"])  # shareable: the filter is in the URL


def test_an_upload_lands_in_the_uploaders_folder_and_no_one_elses(team: Path):
    at = _act(ACT.format(call="services.save_upload('qa.jsonl', b'{\"prompt\": \"a\", \"response\": \"b\"}\\n')"),
              "bob@example.com")
    path = Path(eval(at.markdown[0].value))  # the repr of the path written
    assert path.parent == team / "uploads" / "bob_at_example.com" and path.is_file()
    at = _act(ACT.format(call=f"services.dataset_page({str(path)!r}, 0)"), "carol@example.com")
    assert "another person's upload" in at.error[0].value
    at = _act(ACT.format(call="[p for v in services.inputs().values() for p in v if 'uploads' in p]"),
              "carol@example.com")
    assert at.markdown[0].value == "[]"
    at = _act(ACT.format(call=f"services.dataset_page({str(path)!r}, 0)[1]"), "bob@example.com")
    assert at.markdown[0].value == "1"  # his own: one row


def test_sessions_do_not_share_the_draft(team: Path):
    bob = page(signed_in("bob@example.com"), "workflow.py")
    name = [t for t in bob.text_input if t.label.startswith("Run name")][0]
    name.input("bob's private draft").run()
    carol = page(signed_in("carol@example.com"), "workflow.py")
    assert "bob's private draft" not in [t.value for t in carol.text_input]
    assert "bob's private draft" in [t.value for t in page(bob, "workflow.py").text_input]
