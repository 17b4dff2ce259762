"""The provincial network (issue 15 §1): other facilities, studies and signed reports between them,
tele-radiology.

Modules: :mod:`.sites` (the registry an admin edits; who may connect),
:mod:`.matching` (whose study is it here: CCCD, then name + birth date),
:mod:`.outgoing` (send a study, ask for a read, return a signed report; chart
status), :mod:`.delivery` (what the outbox runs: HTTP to the other EMR, C-STORE
to its gateway), :mod:`.incoming` (what the inter-site API accepts),
:mod:`.client` (the authenticated HTTP calls).
"""
