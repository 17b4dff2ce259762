"""MSH-18 character sets → Python codecs, and decoding a message whose charset is named inside it.

MSH-18 values come from HL7 table 0211 "Alternate Character Sets" (HL7 v2.5
§2.15.9.18; terminology.hl7.org CodeSystem v2-0211): "ASCII", "8859/1".."8859/9",
"8859/15", "UNICODE UTF-8", "UNICODE UTF-16", "UNICODE UTF-32", "GB 18030-2000",
"BIG-5", "KS X 1001"... An empty MSH-18 means ASCII in the standard; a Vietnamese
HIS that leaves it empty usually sends UTF-8 or Windows-1258, so the site
declares its default (``FILMLESS_HL7_DEFAULT_CHARSET``). The MSH segment up to
MSH-18 is plain ASCII in every one of these sets except UTF-16/32, so the field is
read from the bytes before the message is decoded.
"""

from __future__ import annotations

import codecs
import unicodedata

__all__ = ["CHARSETS", "UnknownCharset", "codec_for", "declared_charset", "decode_message", "msh18_for"]

# Table 0211 code → Python codec.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "UNICODE": "utf-8",  # deprecated in v2.5 in favour of the UTF forms; senders mean UTF-8
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc-kr",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
}
# What filmless writes in MSH-18 for a codec it sends in.
_MSH18 = {"utf-8": "UNICODE UTF-8", "ascii": "ASCII", "iso8859-1": "8859/1"}


class UnknownCharset(ValueError):
    """MSH-18 names a character set that is neither in table 0211 nor a codec Python knows."""


def codec_for(msh18: str, default: str) -> str:
    """The Python codec for an MSH-18 value (its first repetition: the message's own set)."""
    value = " ".join(msh18.split("~")[0].split()).upper()
    if not value:
        return codecs.lookup(default).name
    if value in CHARSETS:
        return CHARSETS[value]
    try:  # a few HIS write a codec name (e.g. "UTF-8", "WINDOWS-1258") instead of a table 0211 code
        return codecs.lookup(value).name
    except LookupError:
        raise UnknownCharset(msh18) from None


def declared_charset(raw: bytes) -> str:
    """MSH-18 read from the undecoded bytes ('' when the message has none)."""
    first = raw.replace(b"\n", b"\r").split(b"\r", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 4:
        return ""
    sep = first[3:4]
    fields = first.split(sep)
    # fields[0] is "MSH", fields[1] is MSH-2 (MSH-1 is the separator itself): MSH-n is fields[n-1].
    return fields[17].decode("ascii", "replace").strip() if len(fields) > 17 else ""


def decode_message(raw: bytes, default: str) -> tuple[str, str]:
    """(text, codec) of a raw message, by its MSH-18 or the site default; raises UnicodeDecodeError
    or :class:`UnknownCharset` when the bytes cannot be what the message says."""
    codec = codec_for(declared_charset(raw), default)
    # NFC: Windows-1258 (and some UTF-8 senders) write Vietnamese tone marks as combining characters;
    # names are compared and searched precomposed, as the EMR's own forms store them.
    return unicodedata.normalize("NFC", raw.decode(codec)), codec


def msh18_for(codec: str) -> str:
    return _MSH18.get(codecs.lookup(codec).name, "UNICODE UTF-8")
