"""The dashboard pages; each file is run by st.navigation as a script."""
