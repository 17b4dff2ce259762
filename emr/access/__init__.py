"""Who may do what: the permission table, login, per-study access, the audit chain and its anchors."""
