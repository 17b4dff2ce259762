"""Imaging orders and studies: ordering, the gateway's worklist/identity/MPPS providers, linking, reconciliation."""
