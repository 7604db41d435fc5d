"""Form bodies of the dashboard: ``application/x-www-form-urlencoded`` and ``multipart/form-data`` (the CSV upload),
parsed with the standard library (``urllib.parse``, ``email``), so the eIM needs no form-parsing package.

=====================================================  ======================================================
body                                                   answer
=====================================================  ======================================================
over the limit (``[api] max_batch_body_bytes``)        413, nothing read further
another content type                                   :class:`FormError` -> 415 naming ``Content-Type``
not UTF-8, more than :data:`MAX_FIELDS` fields           :class:`FormError` -> 400 naming ``body``
multipart without a boundary / broken parts            :class:`FormError` -> 400 naming ``body``
=====================================================  ======================================================

A field sent twice keeps every value (``Form.all``); :meth:`Form.get` gives the first one.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_FIELDS = 200


class FormError(ValueError):
    def __init__(self, field_name: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Form:
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (filename, content)

    def get(self, name: str, default: str = "") -> str:
        for k, v in self.fields:
            if k == name:
                return v
        return default

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]


def parse_form(content_type: str, body: bytes) -> Form:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("", "application/x-www-form-urlencoded"):
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
        except UnicodeDecodeError:
            raise FormError("body", "form data must be UTF-8") from None
        except ValueError:
            raise FormError("body", f"more than {MAX_FIELDS} fields") from None
        return Form(pairs)
    if ctype == "multipart/form-data":
        return _multipart(content_type, body)
    raise FormError("Content-Type", f"{ctype[:60]!r} is not a form", 415)


def _multipart(content_type: str, body: bytes) -> Form:
    if "boundary=" not in content_type:
        raise FormError("body", "multipart form without a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise FormError("body", "not a well-formed multipart form")
    fields: list[tuple[str, str]] = []
    files: dict[str, tuple[str, bytes]] = {}
    for n, part in enumerate(msg.iter_parts()):
        if n >= MAX_FIELDS:
            raise FormError("body", f"more than {MAX_FIELDS} fields")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise FormError("body", "a form part without a name")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
            continue
        try:
            fields.append((name, payload.decode("utf-8")))
        except UnicodeDecodeError:
            raise FormError(name, "must be UTF-8 text") from None
    return Form(fields, files)
