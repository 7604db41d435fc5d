"""Generated test profiles (``smdpp.profiles``): one layout per profile, the ICCID only in its two fields.

The package of a new ICCID is assembled from a per-profile layout (built once) instead of being generated again
per download; the packages must stay byte for byte what the per-ICCID generation produced. The pinned digests were
computed with that generation (commit 9ce1b4c, before the layout cache).
"""

from __future__ import annotations

import hashlib

import pytest

from smdpp import profiles
from smdpp.store import luhn_digit

PINNED = {
    ("ts48", "8949000011000000015"): "faa38cd6674c66af972f6b4a762b107024553995c82cdb9d41f82aea70508f79",
    ("large", "8949000014000000019"): "8fdf678e1bc1d7a277d6cdaf91360dd8038e36bbc434e89c45c6f20b4f399cce",
    ("ts48-ppk", "89490000120000000123"): "ef19350442edb1d3a9292ee33a68b7e71bd27426764476112f6c2dab2ea8695f",
}


@pytest.mark.parametrize(("name", "iccid"), sorted(PINNED))
def test_packages_are_what_the_per_iccid_generation_made(name, iccid):
    assert hashlib.sha256(profiles.profile_package(name, iccid)).hexdigest() == PINNED[(name, iccid)]


@pytest.mark.parametrize("name", [p.name for p in profiles.all_profiles() if p.upp is None])
def test_two_iccids_differ_only_in_the_header_and_ef_iccid(name):
    profile = profiles.get_profile(name)
    one, two = (
        body + luhn_digit(body)
        for body in (
            profile.iccid_prefix + "1".rjust(18 - len(profile.iccid_prefix), "0"),
            profile.iccid_prefix + "7".rjust(18 - len(profile.iccid_prefix), "0"),
        )
    )
    a, b = profiles.profile_package(name, one), profiles.profile_package(name, two)
    assert len(a) == len(b) == profile.size
    header_a = bytes.fromhex(one.ljust(20, "F"))  # SAIP ProfileHeader: plain E.118 digit order
    ef_a = profiles.iccid_to_bcd(one)  # EF.ICCID: nibble-swapped
    assert a.count(header_a) == 1 and a.count(ef_a) == 1
    assert b.count(bytes.fromhex(two.ljust(20, "F"))) == 1 and b.count(profiles.iccid_to_bcd(two)) == 1
    differing = [i for i in range(len(a)) if a[i] != b[i]]
    fields = set(range(a.index(header_a), a.index(header_a) + 10)) | set(range(a.index(ef_a), a.index(ef_a) + 10))
    assert differing and set(differing) <= fields
