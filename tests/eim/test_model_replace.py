"""``eim.model.replace`` (the store's copy-with-changes of a record) against ``dataclasses.replace``.

The claim and result paths copy an Operation or an Euicc with a few fields changed on every request; the copy
no longer runs the 20-argument ``__init__``. These tests hold it to ``dataclasses.replace``: equal records of the
same class, the original unchanged, the same ``TypeError`` for a field the record does not have, and classes it
cannot copy that way (``__post_init__``, slots) still going through ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.model import AuditEntry, Euicc, Operation, OpKind, OpStatus, build, replace

VALUES = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.binary(max_size=5))


def _operation() -> Operation:
    return Operation(
        id="op-1",
        eid="89" * 16,
        kind=OpKind.PSMO,
        params={"psmos": [{"op": "getRAT"}]},
        status=OpStatus.QUEUED,
        created_at=1.0,
        updated_at=2.0,
    )


def _euicc() -> Euicc:
    return Euicc(eid="89" * 16, eim_id="eim", association_token=1, counter_value=3, trusted_ci=None)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_same_as_dataclasses_replace(data: st.DataObject) -> None:
    record = data.draw(st.sampled_from([_operation(), _euicc()]))
    names = [f.name for f in dataclasses.fields(record)]
    changes = data.draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=6))
    before = dataclasses.replace(record)
    got = replace(record, **changes)
    want = dataclasses.replace(record, **changes)
    assert type(got) is type(record)
    assert got == want
    assert got is not record
    assert record == before  # the original is not touched
    for name in names:
        assert getattr(got, name) == (changes[name] if name in changes else getattr(record, name))


def test_unknown_field_is_refused_like_dataclasses_replace() -> None:
    with pytest.raises(TypeError):
        replace(_operation(), nope=1)
    with pytest.raises(TypeError):
        dataclasses.replace(_operation(), nope=1)


def test_frozen_after_replace() -> None:
    op = replace(_operation(), attempts=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.attempts = 3  # type: ignore[misc]


def test_post_init_and_slots_classes_go_through_dataclasses_replace() -> None:
    seen: list[int] = []

    @dataclass(frozen=True)
    class Checked:
        n: int
        tags: list[str] = field(default_factory=list)

        def __post_init__(self) -> None:
            seen.append(self.n)
            if self.n < 0:
                raise ValueError("negative")

    @dataclass(frozen=True, slots=True)
    class Slotted:
        n: int

    assert replace(Checked(1), n=2) == Checked(2)
    assert seen[-2:] == [2, 2]  # __post_init__ ran for the copy
    with pytest.raises(ValueError):
        replace(Checked(1), n=-1)
    assert replace(Slotted(1), n=5) == Slotted(5)
    entry = AuditEntry(1, 1.0, "eim", "hand_out", None, None, "ok")
    assert replace(entry, outcome="failed") == dataclasses.replace(entry, outcome="failed")


# ------------------------------------------------------------------------------------------------ build
@settings(max_examples=200, deadline=None)
@given(st.sampled_from([Operation, Euicc, AuditEntry]), st.data())
def test_build_with_every_field_equals_the_constructor(cls, data):
    names = [f.name for f in dataclasses.fields(cls)]
    fields = {n: data.draw(VALUES, label=n) for n in names}
    made = build(cls, **fields)
    assert type(made) is cls
    assert made == cls(**fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.eid = "x"  # type: ignore[misc]  # still frozen
    assert {f.name: getattr(made, f.name) for f in dataclasses.fields(cls)} == fields


def test_build_with_fields_left_out_takes_their_defaults():
    made = build(Operation, id="op-1", eid="89" * 16, kind=OpKind.PSMO, params={}, status=OpStatus.QUEUED,
                 created_at=1.0, updated_at=2.0)  # fmt: skip
    assert made == _operation().__class__(id="op-1", eid="89" * 16, kind=OpKind.PSMO, params={},
                                         status=OpStatus.QUEUED, created_at=1.0, updated_at=2.0)  # fmt: skip
    assert made.attempts == 0 and made.created_by == "operator"


def test_build_refuses_an_unknown_field_or_a_missing_required_one_like_the_constructor():
    fields = {f.name: None for f in dataclasses.fields(Euicc)}
    with pytest.raises(TypeError):
        build(Euicc, **fields, colour="red")
    del fields["eid"]
    with pytest.raises(TypeError):
        build(Euicc, **fields)


def test_build_runs_post_init():
    @dataclass(frozen=True)
    class Checked:
        a: int
        b: list = field(default_factory=list)

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    with pytest.raises(ValueError):
        build(Checked, a=-1, b=[])
    assert build(Checked, a=1, b=[2]) == Checked(1, [2])
