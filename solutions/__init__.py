"""Reference solutions and exercise registries, one module per lecture (solutions/lNN_<stem>.py)."""
