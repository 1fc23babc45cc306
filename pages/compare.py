"""Compare: every candidate of the chosen runs in one table, a quality-vs-speed chart with its Pareto frontier and
the runs' goals; click a point or a row to open a candidate; then side by side, per example, where answers
diverge, the blind A/B leaderboard, the lineage across runs, and a self-contained HTML report.
Plots are sampled past MAX_POINTS; the table never is (it is capped at MAX_ROWS shown, all exported)."""

from __future__ import annotations

import streamlit as st

from app import services
from app.components import candidate_detail, compare_views

MAX_POINTS = 2000
MAX_ROWS = 20_000  # rows sent to the browser's table; the CSV and the report always hold every candidate
MAX_PICK = 1000  # candidates offered in the pickers below: the Pareto ones first, then the table's order

st.title("Compare candidates")
runs = services.measured_runs()
if not runs:
    st.info("No measured candidates yet: finished runs with an evaluation show up here.")
    st.stop()

people = sorted({r["user"] for r in runs if r.get("user")})
by = "everyone"
if len(people) > 1:  # a shared Grove: whose runs to compare
    by = st.segmented_control("Launched by", ["everyone", *people], default="everyone", key="cmp_by") or "everyone"
    runs = [r for r in runs if by == "everyone" or r.get("user") == by]
# the whole id: the multiselect keeps its choices by label, and two runs of a name on one day share id[:8]
names = {r["id"]: f"{r['name']} ({r['id']}, {r['candidates']} measured" + (f", by {r['user']})" if r.get("user") else ")")
         for r in runs}
picked = st.multiselect("Runs", list(names), default=list(names), format_func=names.get,
                        key="cmp_runs" if by == "everyone" else f"cmp_runs-{by}")
if not picked:
    st.info("Pick at least one run.")
    st.stop()

ok, why = services.comparability(picked)
if not ok:
    st.warning(
        f"Not directly comparable: {why}. Compare numbers measured the same way.", icon=":material/warning:"
    )
_, _, speed_pending = services.speed_check(picked)
if speed_pending:
    st.info(f"Speed pending for {speed_pending} candidate(s): their device was busy, so their speed is measured when it "
            "is free (the chart leaves them out until then).", icon=":material/hourglass_top:")

cmp = services.comparison(picked)
metric_names = cmp.metric_names
c1, c2, c3 = st.columns(3)
speeds = services.metric_choices(metric_names, services.SPEED)
qualities = services.quality_choices(metric_names)
x = c1.selectbox("Speed (x)", speeds, key="cmp_x") if speeds else None
y = c2.selectbox("Quality (y)", qualities, key="cmp_y") if qualities else None
needle = c3.text_input("Filter (run, candidate or pass chain contains)", key="cmp_filter").strip().lower()

table = services.compare_table(picked, x, y)  # every candidate, full precision: what the CSV exports
unmeasured = services.compare_unmeasured(picked)  # folded away below the table, each with why
measured = table[~table["id"].isin([r["id"] for r in unmeasured])] if unmeasured else table
shown = measured
if needle:
    hay = measured["run"].str.lower() + "\n" + measured["pass chain"].str.lower()
    if "candidate" in measured:
        hay = hay + "\n" + measured["candidate"].str.lower()
    shown = measured[hay.str.contains(needle, regex=False)]
st.caption(
    f"{len(shown)} of {len(measured)} measured candidates" + (f" match “{needle}”" if needle else "")
    + (f"; the first {MAX_ROWS:,} are listed" if len(shown) > MAX_ROWS else "")
    + ". Click a header to sort, a row to open the candidate."
)
picked_row = st.dataframe(
    shown.head(MAX_ROWS), hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
    key="cmp_table", column_config=compare_views.table_config(list(table.columns)),
)
if unmeasured:
    with st.expander(f"{len(unmeasured)} candidate(s) not measured"):
        st.dataframe(unmeasured, hide_index=True, width="stretch", key="cmp_unmeasured")
d1, d2 = st.columns(2)
d1.download_button("Export CSV", lambda: table.to_csv(index=False).encode(), "grove-candidates.csv", "text/csv",
                   icon=":material/download:", key="cmp_csv")
d2.download_button("HTML report (works offline)", lambda: services.report_html(picked).encode(), "grove-report.html",
                   "text/html", icon=":material/description:", key="cmp_report")

clicked = None
if x and y:
    fig, n_points, sampled = services.compare_figure(picked, x, y, MAX_POINTS)
    event = st.plotly_chart(fig, key="cmp_chart", on_select="rerun", selection_mode="points")
    points = (event or {}).get("selection", {}).get("points") or []
    clicked = int(points[0]["customdata"][0]) if points and points[0].get("customdata") else None
    st.caption(
        (f"The chart shows {n_points} of the measured candidates (every Pareto point plus a sample); the table lists "
         "all of them. " if sampled else "Marker size: size on disk. ")
        + "Ringed: meets every goal of its run (dashed lines; red: the side that misses). ★: Olive's best. "
        "Click a point to open it."
    )
sel = (picked_row or {}).get("selection", {}).get("rows") or []
if sel:
    clicked = int(shown.iloc[sel[0]]["id"])

# -- the candidate opened ------------------------------------------------------------------------------------------
by_id = table.set_index("id")
order = [int(i) for i in shown.sort_values("Pareto", ascending=False, kind="stable")["id"].head(MAX_PICK)]
if clicked is not None and clicked != st.session_state.get("cmp_clicked"):
    st.session_state["cmp_clicked"] = st.session_state["cmp_open"] = clicked
if st.session_state.get("cmp_open") in by_id.index and st.session_state["cmp_open"] not in order:
    order.insert(0, st.session_state["cmp_open"])
sub = by_id.loc[order]
builds = sub["candidate"] if "candidate" in sub else sub["pass chain"]
labels = {i: f"{b} · {r} #{i}" for i, r, b in zip(order, sub["run"], builds, strict=True)}  # as Chat names them
st.subheader("Candidate")
cid = st.selectbox("Open candidate", order, index=None, format_func=labels.get, key="cmp_open",
                   placeholder="Click a point or a row, or pick one")
if cid is not None:
    ready = {c["id"] for c in services.chat_candidates()}
    opened = services.compare_candidates([cid])[cid]
    candidate_detail.show(opened, services.candidate_evaluations([cid]).get(cid), cid in ready)

tabs = st.tabs(["Side by side", "Per example", "Where they disagree", "Blind A/B votes", "Lineage"])
with tabs[0]:
    compare_views.side_by_side(labels)
with tabs[1]:
    compare_views.per_example(labels)
with tabs[2]:
    compare_views.disagree(labels)
with tabs[3]:
    compare_views.votes()
with tabs[4]:
    compare_views.lineage(picked)
