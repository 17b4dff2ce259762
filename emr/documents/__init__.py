"""Clinical documents: drafts, versions, amendments (signing is in :mod:`emr.signing`)."""
