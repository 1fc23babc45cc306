"""Grove engine: everything that is not UI. Never imports Streamlit."""
