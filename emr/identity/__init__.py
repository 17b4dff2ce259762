"""Identity by CCCD against the national population database (issue 15 §3).

``adapter`` (the HTTP contract, docs/identity-adapter.md), ``checks`` (queue and
run checks; registration never waits), ``reconcile`` (the queue of mismatches
and the decisions on them). Import the modules; this package imports nothing,
so ``emr.patients.service`` can queue checks without an import cycle.
"""
