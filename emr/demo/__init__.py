"""The demonstration data (`filmless demo`, `filmless up --demo`): never imported by the EMR itself.

:mod:`emr.demo.seed` needs numpy (the ``[codecs]``/``[dev]`` extras); a plain
install of the EMR does not import it.
"""
