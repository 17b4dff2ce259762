"""HL7 v2 with an existing hospital information system (issue 15 §5).

In: ADT A01/A04/A08/A40 (register, update, merge patients) and ORM^O01 /
OMI^O23 (imaging orders that feed the modality worklist) over MLLP, each
answered with an original-mode ACK (AA/AE/AR, ERR segment on errors).
Out: ORU^R01 with the signed report through the durable outbox. Every message
is logged in ``hl7_messages`` and can be replayed (admin page, CLI).
"""
