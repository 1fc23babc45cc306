"""Grove's router: ``streamlit run app/main.py`` (``./grove up`` does it). Pages are listed explicitly below;
adding one (compare, chat) is one line in PAGES."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import services
from app.components import signin

ROOT = Path(__file__).resolve().parent.parent
PAGES = [  # (file in pages/, title, icon, section, what a person must be allowed: engine.access)
    ("home.py", "Home", ":material/home:", "Grove", "view"),
    ("model_data.py", "Model & data", ":material/dataset:", "Build", "launch"),
    ("workflow.py", "Workflow", ":material/account_tree:", "Build", "launch"),
    ("runs.py", "Runs", ":material/monitoring:", "Watch", "view"),
    ("compare.py", "Compare", ":material/compare:", "Watch", "view"),
    ("chat.py", "Chat", ":material/chat:", "Watch", "chat"),
]


def page(file: str) -> st.Page:
    """The st.Page for pages/<file> (for st.switch_page and st.page_link)."""
    for f, title, icon, _, _ in PAGES:
        if f == file:
            return st.Page(ROOT / "pages" / f, title=title, icon=icon, default=f == PAGES[0][0])
    raise KeyError(file)


def main() -> None:
    st.set_page_config(page_title="Grove", page_icon=":material/park:", layout="wide")
    services.warm_up()  # once per process, in the background: Plotly's first figure
    signin.gate()  # with sign-in configured: nothing below until someone with a role is signed in
    nav: dict[str, list[st.Page]] = {}
    for f, _title, _icon, section, needs in PAGES:
        if services.can(needs):  # a viewer has no Model & data or Workflow page
            nav.setdefault(section, []).append(page(f))
    st.navigation(nav).run()


if __name__ == "__main__":
    main()
