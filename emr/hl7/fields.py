"""Reading typed values out of python-hl7 messages: the few HL7 v2.5 data types the interface uses.

Data types from HL7 v2.5 chapter 2A: CX (PID-3, §2A.14), XPN (PID-5, §2A.88),
XAD (PID-11, §2A.87), XTN (PID-13, §2A.89), DTM/TS (§2A.22, §2A.77: YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]),
EI (ORC-2, §2A.24), CWE/CE (OBR-4, §2A.13). HL7 "" (two double quotes) means
"delete the value" (§2.5.3.1 "null"); an empty field means "not sent, keep".
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import hl7

__all__ = [
    "NULL",
    "Hl7Error",
    "component",
    "escape",
    "field",
    "get",
    "parse_date",
    "parse_dtm",
    "repetitions",
    "unescape",
]

NULL = '""'
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")


class Hl7Error(Exception):
    """A message that cannot be applied: answered with ``ack_code`` and an ERR segment.

    ``code`` is from HL7 table 0357 (message error condition codes: 100 segment sequence,
    101 required field missing, 102 data type error, 103 table value not found, 200
    unsupported message type, 201 unsupported event code, 204 unknown key identifier,
    205 duplicate key identifier, 207 application internal error); ``location`` is
    the ERL of ERR-2 (segment^sequence^field[^repetition^component]).
    """

    def __init__(self, code: str, text: str, *, location: str = "", ack_code: str = "AE") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location
        self.ack_code = ack_code


def _seg(msg: hl7.Message, name: str) -> Any | None:
    try:
        return msg.segment(name)
    except KeyError:
        return None


def field(msg: hl7.Message, seg: str, num: int) -> Any | None:
    """The raw field (python-hl7 container) or None when the segment or field is absent."""
    s = _seg(msg, seg)
    if s is None or len(s) <= num:
        return None
    return s[num]


def repetitions(value: Any) -> list[Any]:
    """A field's repetitions. python-hl7 nests Field → Repetition → Component → str when the field
    has components or repeats, and Field → str when it is one plain value."""
    if value is None:
        return []
    if isinstance(value, hl7.Field) and value and isinstance(value[0], hl7.Repetition):
        return list(value)
    return [value]


def component(value: Any, num: int, sub: int = 1) -> str:
    """Component ``num`` (1-based), subcomponent ``sub``, of one repetition as raw text; '' when absent."""
    if value is None:
        return ""
    if isinstance(value, hl7.Field):
        if not value:
            return ""
        if isinstance(value[0], hl7.Repetition):
            value = value[0]
        else:  # a plain value: it is component 1
            return str(value[0]) if num == 1 and sub == 1 else ""
    if isinstance(value, str):
        return value if num == 1 and sub == 1 else ""
    parts = list(value)
    if num > len(parts):
        return ""
    part = parts[num - 1]
    if isinstance(part, hl7.Component):
        subs = list(part)
        return str(subs[sub - 1]) if sub <= len(subs) else ""
    return str(part) if sub == 1 else ""


def parse_dtm(text: str, where: str) -> datetime | None:
    """An HL7 DTM as an aware datetime when it carries an offset, else a naive facility-local one."""
    text = text.strip()
    if not text or text == NULL:
        return None
    m = _DTM.match(text)
    if not m:
        raise Hl7Error("102", f"{text!r} is not an HL7 date/time", location=where)
    year, month, day, hour, minute, second, offset = m.groups()
    try:
        value = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        raise Hl7Error("102", f"{text!r} is not a valid date/time", location=where) from None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        value = value.replace(tzinfo=timezone(sign * delta) if delta else UTC)
    return value


def parse_date(text: str, where: str) -> tuple[date, bool] | None:
    """(date, year_only) of an HL7 birth date; YYYY alone is a year of birth only."""
    text = text.strip()
    if not text or text == NULL:
        return None
    value = parse_dtm(text, where)
    assert value is not None
    return value.date(), len(text) == 4


_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str, *, breaks: bool = False) -> str:
    """Text made safe for a field with the default delimiters (HL7 v2.5 §2.7.4); with ``breaks``
    line ends become \\.br\\ (formatted text, FT, §2.7.6)."""
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\\.br\\" if breaks else " ")


def get(msg: hl7.Message, seg: str, num: int, comp: int = 1, *, rep: int = 1, sub: int = 1) -> str:
    """SEG-num.comp (repetition ``rep``) as unescaped, stripped text; '' when absent."""
    reps = repetitions(field(msg, seg, num))
    if rep > len(reps):
        return ""
    return unescape(msg, component(reps[rep - 1], comp, sub)).strip()


def unescape(msg: hl7.Message, text: str) -> str:
    return msg.unescape(text) if "\\" in text else text
