"""The Compare page's lower sections, each a ``show`` of its own: side-by-side settings, per-example comparison of
two candidates, where 2-3 candidates' answers diverge, the blind A/B leaderboard, and the lineage graph."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import services


def table_config(columns: list[str]) -> dict[str, object]:
    """Compare's table columns: each metric with its unit and the digits worth reading (the numbers stay numbers, so a
    column still sorts; the CSV keeps every digit), the others as they are."""
    known = services.metrics()
    return {m: st.column_config.NumberColumn(m, format=services.metric_format(m), help=known[m]["what"])
            for m in columns if m in known}


def side_by_side(labels: dict[int, str]) -> None:
    chosen = st.multiselect("Candidates to diff (2 or more)", list(labels), format_func=labels.get, key="cmp_diff")
    if len(chosen) < 2:
        st.caption("Pick two or more candidates." if not chosen else "Pick one more candidate.")
        return
    cands = services.compare_candidates(chosen)
    cols = {labels[cid]: services.side_by_side(cands[cid]) for cid in chosen}
    diff = pd.DataFrame(cols).map(lambda v: "—" if v is None or v != v else str(v))
    differs = diff.nunique(axis=1) > 1
    only = st.toggle("Only what differs", value=True, key="cmp_only_diff")
    st.dataframe(diff[differs] if only else diff, width="stretch")


def per_example(labels: dict[int, str]) -> None:
    ids = list(labels)
    c1, c2, c3 = st.columns([3, 3, 1])
    a = c1.selectbox("Candidate A", ids, format_func=labels.get, key="cmp_ex_a")
    b = c2.selectbox("Candidate B", ids, index=min(1, len(ids) - 1), format_func=labels.get, key="cmp_ex_b")
    score = c3.selectbox("Score", services.EXAMPLE_SCORES, key="cmp_ex_score")
    if a is None or b is None or a == b:
        st.caption("Pick two different candidates.")
        return
    ev = services.candidate_evaluations([a, b])
    rows = services.per_example((ev.get(a) or {}).get("samples") or [], (ev.get(b) or {}).get("samples") or [], score)
    if not rows:
        st.info("No held-out examples were kept for both candidates (evaluate them in one run with evaluation on).")
        return
    better = sum(1 for r in rows if (r["B better by"] or 0) > 0)
    worse = sum(1 for r in rows if (r["B better by"] or 0) < 0)
    st.caption(f"{len(rows)} examples, largest difference first: B better on {better}, worse on {worse}.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="cmp_ex_table")


def disagree(labels: dict[int, str]) -> None:
    picked = st.multiselect(
        "Candidates (2 or 3)", list(labels), format_func=labels.get, max_selections=3, key="cmp_dis"
    )
    if len(picked) < 2:
        st.caption("Pick two or three candidates: their greedy answers per held-out prompt, and the first word where they part.")
        return
    ev = services.candidate_evaluations(picked)
    rows = services.disagreements([(ev.get(c) or {}).get("samples") or [] for c in picked])
    if not rows:
        st.info("These candidates have no held-out examples in common.")
        return
    n = sum(1 for r in rows if r["diverge at word"] >= 0)
    st.caption(f"They disagree on {n} of {len(rows)} prompts (word -1: identical answers). "
               + " · ".join(f"{'ABC'[k]} = {labels[c]}" for k, c in enumerate(picked)))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="cmp_dis_table")


def votes() -> None:
    board = services.leaderboard()
    if not board:
        st.caption("No blind A/B votes yet: turn on A/B and “Blind” in Chat, ask, and vote.")
        return
    st.dataframe(pd.DataFrame(board), hide_index=True, width="stretch", key="cmp_votes",
                 column_config={"win rate": st.column_config.ProgressColumn("win rate", min_value=0, max_value=1)})


def lineage(run_ids: list[str]) -> None:
    if not st.toggle("Draw the lineage graph", key="cmp_lineage_on", help="reads every run's pass events: on demand"):
        st.caption("How the candidates descend from their input model across these runs, and what Olive's cache saved.")
        return
    dot, reused = services.lineage(run_ids)
    st.graphviz_chart(dot)
    if reused:
        saved = sum(r["seconds saved"] or 0 for r in reused)
        st.caption(f"{len(reused)} pass outputs reused from Olive's cache, saving about {services.fmt_seconds(saved)}"
                   " (the seconds each pass took where it did run).")
        st.dataframe(pd.DataFrame(reused), hide_index=True, width="stretch")
    else:
        st.caption("No pass of these runs came from Olive's cache.")
