"""The ``Content-Disposition`` header: the file name a server suggests (pure).

:func:`disposition_names` reads a header value as RFC 6266 defines it, with
the standard library's MIME parameter parser (:mod:`email.message`): the
extended ``filename*=`` parameter (RFC 5987/8187: ``CHARSET'LANG'%XX...``,
percent-decoded, in UTF-8 or ISO-8859-1 only) first, then the plain
``filename=`` (a token or a quoted string, its ``\\"`` and ``\\\\`` unescaped).
Nothing here checks that a name is safe to write: that is
:func:`dlmanager.server_names.check_server_name`'s job.
"""

from __future__ import annotations

from email.message import Message

__all__ = ["CHARSETS", "disposition_names"]

#: The charsets of ``filename*=`` that are decoded (RFC 8187 requires
#: UTF-8; ISO-8859-1 is what older servers send); another one is ignored.
CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "iso-8859-1": "latin-1", "latin-1": "latin-1",
            "latin1": "latin-1"}  # fmt: skip


def disposition_names(value: str | None) -> list[tuple[str, str]]:
    """The file names *value* (a ``Content-Disposition`` header) suggests, best
    first, each as ``(where, name)``: ``where`` is ``"filename*"`` or
    ``"filename"``; ``[]`` when it suggests none.

    A ``filename*=`` in another charset than UTF-8 or ISO-8859-1, or whose
    bytes are not valid in its charset, is left out (the plain ``filename=``
    is then used, if any). A plain ``filename=`` is taken as its header
    bytes give it: bytes that are valid UTF-8 are read as UTF-8 (what most
    servers that send raw non-ASCII names mean), others as ISO-8859-1; it is
    never percent-decoded (RFC 6266, section 4.3). A quoted string that is
    not closed is left out.
    """
    if not value or not isinstance(value, str):
        return []
    message = Message()
    try:
        message["Content-Disposition"] = value
        params = message.get_params(header="Content-Disposition", unquote=False) or []
    except (ValueError, TypeError, IndexError):  # a header the parser cannot read
        return []
    extended: str | None = None
    plain: str | None = None
    for name, raw in params[1:]:  # the first is the disposition type
        if name.lower() != "filename":
            continue
        if isinstance(raw, tuple):
            if extended is None:
                extended = _decode_extended(*raw)
        elif plain is None:
            plain = _decode_plain(raw)
    names = []
    if extended is not None:
        names.append(("filename*", extended))
    if plain is not None:
        names.append(("filename", plain))
    return names


def _decode_extended(charset: str | None, language: str | None, value: str) -> str | None:
    """The name of a ``filename*=`` parameter the parser split (and percent-decoded
    into one character per byte), or None."""
    codec = CHARSETS.get((charset or "").strip().lower())
    if codec is None:
        return None
    unquoted = _unquote(value)
    if unquoted is None:
        return None
    try:
        return unquoted.encode("latin-1").decode(codec)
    except UnicodeError:  # not valid in its charset
        return None


def _decode_plain(raw: str) -> str | None:
    value = _unquote(raw)
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # characters beyond ISO-8859-1, or not UTF-8: as they are
        return value


def _unquote(raw: str) -> str | None:
    """*raw* (quoted by the parser: ``"..."``) without its quotes, its quoted
    pairs (``\\x``) unescaped; None for an unclosed quoted string."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    inner, out, escaped = raw, [], False
    if inner.startswith('\\"'):  # the parser quoted a value that began with a quote
        return None
    for char in inner:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)
