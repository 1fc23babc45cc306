"""The sign-in gate (docs/auth.md): with ``[auth]`` in the secrets file, nothing of Grove is drawn before an OpenID
Connect sign-in through Streamlit's own ``st.login``; a person the roles file gives no role is stopped here too.
Without sign-in configured (one person on 127.0.0.1) everyone is the local administrator and nothing is drawn."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from engine.errors import GroveError


def gate() -> dict[str, Any]:
    """The person using this session ({user, role, name, local}); stops the script until one is signed in."""
    mode, problems = services.sign_in_state()
    if mode == "off":
        return services.person()
    if mode == "broken":
        st.title("Grove")
        st.error("Sign-in is configured but cannot work:\n\n" + "\n".join(f"- {services.markdown_literal(p)}"
                                                                      for p in problems))
        st.stop()
    if not st.user.is_logged_in:
        st.title("Grove")
        providers = services.sign_in_providers()
        if not providers:
            if st.button("Sign in", type="primary"):
                st.login()
        for p in providers:
            if st.button(f"Sign in with {p}", type="primary", key=f"signin-{p}"):
                st.login(p)
        st.stop()
    try:
        person = services.person()
    except GroveError as e:  # a broken roles file: said to everyone, Grove stays closed
        st.title("Grove")
        st.error(services.markdown_literal(str(e)))
        st.stop()
    if person["role"] is None:
        st.title("Grove")
        st.error(f"{services.markdown_literal(person['user'])} has no role in Grove ({person['why']}): ask an admin to "
                 "add you to the roles file.")
        if st.button("Sign out"):
            st.logout()
        st.stop()
    with st.sidebar:
        st.caption(f"{services.markdown_literal(person['user'])} · {person['role']}", help=person["why"])
        if st.button("Sign out", icon=":material/logout:"):
            st.logout()
    return person
