"""The command extractor of doccmds.py: what counts as a shown command, on small documents and on noise."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.docs.doccmds import extract, strip_comment

DOC = """# t
```
$ eim serve &      # background
{"a": 1}
$ curl -s -X POST http://x \\
    -d '{"k":
         "v"}'
out
```
```toml
eim serve = 1
```
```
rsp decode --type T HEX|-      # JSON
smdpp serve --pki DIR
            [--curve nist]
not a command
```

    make bench                  # long
`ipa --json --port P chip info` then `ipa --json eim list`
prose `eim op show` in a sentence
"""


def test_what_is_a_shown_command(tmp_path: Path) -> None:
    path = tmp_path / "t.md"
    path.write_text(DOC)
    got = [(c.line, c.text, c.output) for c in extract(path)]
    assert got == [
        (3, "eim serve &", ('{"a": 1}',)),
        (5, """curl -s -X POST http://x -d '{"k": "v"}'""", ("out",)),
        (14, "rsp decode --type T HEX|-", ()),
        (15, "smdpp serve --pki DIR [--curve nist]", ()),
        (20, "make bench", ()),
        (21, "ipa --json --port P chip info", ()),
        (21, "ipa --json eim list", ()),
    ]


def test_comments_outside_quotes_only() -> None:
    assert strip_comment("printf '%s #x' a   # c") == "printf '%s #x' a"
    assert strip_comment("echo a#b") == "echo a#b"


@given(st.text(alphabet=st.sampled_from(list("`$ \\\n'\"#abc-[]|{}eimrsp")), max_size=400))
def test_extractor_never_fails_on_noise(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("noise") / "n.md"
    path.write_text(text)
    for c in extract(path):
        assert c.text == " ".join(c.text.split()) and c.line >= 1
