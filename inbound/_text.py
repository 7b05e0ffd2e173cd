"""Text out of hostile bytes: charsets, RFC 2047 encoded words, transfer encodings, crude HTML.

Private to `inbound/`. Every function here takes bounded input, runs in linear time and never
raises on content: an unknown or unsafe charset decodes as UTF-8 with replacement characters, a
broken base64 body decodes as far as it can. Callers bound the input first (see the limits in
`inbound.parsing`); nothing here allocates more than a small multiple of what it is given.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
import unicodedata

# Codecs Python can look up that are not character sets of mail (RFC 2978 registers charsets):
# escapes, transforms, IDNA and punycode (whose decoders are super-linear on long input,
# CVE-2022-45061). A part labelled with one of them is decoded as UTF-8 instead.
_NOT_CHARSETS = frozenset(
    {
        "idna",
        "punycode",
        "raw_unicode_escape",
        "unicode_escape",
        "charmap",
        "mbcs",
        "oem",
        "undefined",
    }
)
_CHARSET_CACHE: dict[str, str | None] = {}
_MAX_CHARSET_LABEL = 40


def codec_for(charset: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None when it is unknown or unsafe.

    `x-unknown`, `utf-8'en'` (an RFC 2231 leftover), `rot13` (a transform, not a text encoding)
    and IDNA all give None: the caller then decodes as UTF-8 with replacement.
    """
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()[:_MAX_CHARSET_LABEL]
    if label in _CHARSET_CACHE:
        return _CHARSET_CACHE[label]
    name: str | None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        name = None
    else:
        # `_is_text_encoding` is False for bytes-to-bytes and str-to-str codecs (base64, rot13),
        # which `bytes.decode` refuses anyway; checked here so the refusal is ours.
        text_codec = getattr(info, "_is_text_encoding", True)
        name = info.name if text_codec and info.name not in _NOT_CHARSETS else None
    if len(_CHARSET_CACHE) < 512:  # labels are attacker-chosen: the cache must stay small
        _CHARSET_CACHE[label] = name
    return name


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool]:
    """`data` as text in `charset`; (text, True) when the charset was unknown or unsafe and
    UTF-8 with replacement characters was used instead. Never raises."""
    codec = codec_for(charset)
    if codec is None:
        return data.decode("utf-8", "replace"), charset is not None and charset.strip() != ""
    try:
        return data.decode(codec, "replace"), False
    except Exception:  # a codec that fails even with errors="replace" (seen: none); stay total
        return data.decode("utf-8", "replace"), True


def header_str(value: object) -> str:
    """A header value as the compat32 parser holds it, back to text.

    compat32 decodes header bytes as ASCII with `surrogateescape`; raw UTF-8 (RFC 6532) comes
    back here, anything else non-ASCII becomes U+FFFD. A `Header` object (a non-ASCII header
    the parser could not keep as str) is turned into its string form the same way.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x80-\x9f\u2028\u2029]")


def has_control(value: str) -> bool:
    """Whether a header value holds a control character other than its folding."""
    return _CONTROL.search(_FOLD.sub("", value)) is not None


def unfold(value: str) -> str:
    """RFC 5322 §2.2.3 unfolding (a line break followed by white space is removed), then every
    remaining control character (CR, LF, NUL, C1, U+2028/9) becomes a space."""
    return _CONTROL.sub(" ", _FOLD.sub("", value))


# RFC 2047 §2: =?charset?encoding?encoded-text?= ; RFC 2231 §5 allows charset*language.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]{1,40})(?:\*[^?\s]{0,20})?\?([qQbB])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t]+")


def decode_words(value: str) -> tuple[str, bool]:
    """RFC 2047 encoded words in an unstructured header decoded once (never recursively: an
    encoded word that decodes to another stays as text), white space between two adjacent
    encoded words dropped (§6.2). Returns (text, unknown_charset_seen). Linear in `value`."""
    out: list[str] = []
    unknown = False
    position = 0
    previous_end = -1
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        if previous_end < 0 or not _BETWEEN_WORDS.fullmatch(gap):
            out.append(gap)
        charset, encoding, encoded = match.groups()
        # RFC 2047 §4.2: in Q, "_" is a space.
        raw = _b64(encoded) if encoding in "bB" else _qp(encoded.replace("_", " "), header=True)
        text, bad = decode_bytes(raw, charset)
        unknown = unknown or bad
        out.append(text)
        position = match.end()
        previous_end = match.end()
    out.append(value[position:])
    return "".join(out), unknown


def _b64(text: str) -> bytes:
    """Lenient base64: junk characters skipped, padding restored (a lone trailing character
    carries no whole byte and is dropped)."""
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return binascii.a2b_base64(cleaned)
    except binascii.Error:
        return b""


def _qp(text: str, *, header: bool = False) -> bytes:
    data = text.encode("ascii", "surrogateescape")
    try:
        return binascii.a2b_qp(data, header=header)
    except binascii.Error:
        return data


def decode_transfer(payload: str, encoding: str | None) -> bytes:
    """A part's payload (as compat32 holds it: str, surrogate-escaped bytes) decoded from its
    Content-Transfer-Encoding: base64 (junk characters skipped, a ragged end dropped),
    quoted-printable, or the raw bytes for 7bit/8bit/binary and anything unknown."""
    raw = payload if isinstance(payload, str) else str(payload)
    kind = (encoding or "").strip().lower()
    if kind == "base64":
        return _b64(raw)
    if kind == "quoted-printable":
        return _qp(raw)
    return raw.encode("utf-8", "surrogateescape")


def clean_text(text: str) -> str:
    """Body text safe to store and show: line breaks normalised to LF, NUL and other control
    characters (but TAB and LF) removed, Unicode NFC."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]", "", text)
    return unicodedata.normalize("NFC", text)


_BLOCK_TAGS = frozenset(
    {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "hr"}
)
_DROP_CONTENT = ("script", "style", "head", "title")
_SPACES = re.compile(r"[ \t\r\n\f]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TAG_NAME = re.compile(r"/?\s*([A-Za-z][A-Za-z0-9]*)")


def html_to_text(markup: str) -> str:
    """Crude HTML to text: tags dropped (line breaks for block tags), `<script>`, `<style>`,
    `<head>` and `<title>` dropped with their content, comments dropped, character references
    unescaped. One forward scan with `str.find`, so linear even on unclosed tags and comments
    (the standard library's `HTMLParser` is quadratic on some of those before 3.11.13,
    CVE-2025-6069)."""
    out: list[str] = []
    position = 0
    length = len(markup)
    # ASCII-only lower case keeps every index valid (`str.lower` can change the length).
    lower = markup.translate(_ASCII_LOWER)
    while position < length:
        start = markup.find("<", position)
        if start < 0:
            out.append(_SPACES.sub(" ", markup[position:]))
            break
        # Line breaks in markup are spaces (HTML collapses white space); block tags break lines.
        out.append(_SPACES.sub(" ", markup[position:start]))
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            position = length if end < 0 else end + 3
            continue
        end = markup.find(">", start + 1)
        if end < 0:
            break  # an unclosed tag at the end: drop it
        tag = _TAG_NAME.match(markup, start + 1, min(end, start + 40))
        name = tag.group(1).lower() if tag else ""
        position = end + 1
        if name in _DROP_CONTENT and not markup.startswith("/", start + 1):
            close = lower.find(f"</{name}", position)
            if close < 0:
                break
            close_end = markup.find(">", close)
            position = length if close_end < 0 else close_end + 1
            continue
        if name in _BLOCK_TAGS:
            out.append("\n")
    text = html.unescape("".join(out))
    # Collapse the indentation and blank-line runs that markup leaves behind.
    text = re.sub(r"[ \t\xa0]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
