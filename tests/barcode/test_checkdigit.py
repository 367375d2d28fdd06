"""Check digits: published vectors, error-detection properties, validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barcode.checkdigit import (
    CheckAlgorithm,
    Problem,
    Scheme,
    append_check_char,
    compute_check_char,
    normalise,
    validate,
)
from barcode.luhn import LuhnModN

# Published vectors: (scheme, payload, check character).
VECTORS = [
    # idgen's own test: LuhnMod10IdentifierValidatorTest, "2468" -> "24687"
    # (openmrs/openmrs-module-idgen, api/src/test/java/.../validator/).
    (Scheme.LUHN10, "2468", "7"),
    # Wikipedia, "Luhn algorithm", worked example.
    (Scheme.LUHN10, "7992739871", "3"),
    # OpenMRS wiki, "Check Digit Algorithm", worked example.
    (Scheme.LUHN10, "139", "6"),
    # python-stdnum: stdnum/luhn.py docstring and tests/test_luhn.doctest.
    (Scheme.LUHN10, "7894", "9"),
    (Scheme.LUHN10, "4992739871", "6"),
    (Scheme.LUHN10, "142857", "2"),
    (Scheme.LUHN10, "398438246238642378648236487236482734", "7"),
    # idgen's tests have no mod-30 vector with an expected value, so these are
    # real "OpenMRS ID"s (type 05a29f94-..., validator LuhnMod30IdentifierValidator)
    # returned by OpenMRS servers, from openmrs/openmrs-contrib-rest-api-docs,
    # source/includes/Patient/patients.md: 1001W2 (qa-refapp), 1003EY
    # (demo.openmrs.org, "Sarah Lewis").
    (Scheme.LUHN30, "1001W", "2"),
    (Scheme.LUHN30, "1003E", "Y"),
    # Wikipedia, "Verhoeff algorithm", worked example: 236 -> 2363.
    (Scheme.VERHOEFF, "236", "3"),
    # python-stdnum: stdnum/verhoeff.py docstring and tests/test_verhoeff.doctest.
    (Scheme.VERHOEFF, "1234", "0"),
    (Scheme.VERHOEFF, "654", "8"),
    (Scheme.VERHOEFF, "1428570", "8"),
    (Scheme.VERHOEFF, "398438246238642378648236487236482734", "7"),
    # Perl Algorithm::CheckDigits, MXX_006 (Verhoeff) synopsis.
    (Scheme.VERHOEFF, "1456789", "4"),
]

# Luhn mod N over other alphabets: the Wikipedia "Luhn mod N algorithm" example
# (abcdef -> e) and a mod-36 example, both from the README of
# alfredmyers/calculate-luhn-mod-n; python-stdnum's test_luhn.doctest also
# checks that "abcdefe" is valid over "abcdef".
HEX6 = LuhnModN(alphabet="abcdef", name="abcdef")
BASE36 = LuhnModN(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", name="base36")
CUSTOM_VECTORS = [
    (HEX6, "abcdef", "e"),
    (BASE36, "1134806PJFB000010013CD18", "D"),
]

# Valid whole numbers published as such (python-stdnum test doctests).
VALID_IDS = [
    (Scheme.LUHN10, "490154203237518"),
    (Scheme.VERHOEFF, "1428570"),
]

SCHEMES = list(Scheme)


def undetected_transpositions(scheme: Scheme) -> set[tuple[str, str]]:
    """The adjacent swaps ``ab -> ba`` a scheme cannot see (barcode.luhn docstring).

    Luhn mod N: exactly the alphabet's first and last characters, either way
    round, wherever they stand (the check character included).  Verhoeff: none.
    """
    if scheme is Scheme.VERHOEFF:
        return set()
    alphabet = scheme.algorithm.alphabet
    first, last = alphabet[0], alphabet[-1]
    return {(first, last), (last, first)}


def idgen_check_char(payload: str, alphabet: str) -> str:
    """idgen's computeCheckDigit, restated as an independent test oracle."""
    factor, total, mod = 2, 0, len(alphabet)
    for char in reversed(payload):
        addend = factor * alphabet.index(char)
        factor = 1 if factor == 2 else 2
        total += addend // mod + addend % mod
    return alphabet[(mod - total % mod) % mod]


def valid_ids(scheme: Scheme) -> st.SearchStrategy[str]:
    payloads = st.text(alphabet=scheme.algorithm.alphabet, min_size=1, max_size=12)
    return payloads.map(lambda payload: append_check_char(payload, scheme))


def is_valid(candidate: str, scheme: CheckAlgorithm | Scheme) -> bool:
    return validate(candidate, scheme).valid


# --- vectors ---------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "payload", "check"), VECTORS)
def test_published_vector(scheme: Scheme, payload: str, check: str) -> None:
    assert compute_check_char(payload, scheme) == check
    assert append_check_char(payload, scheme) == payload + check
    assert validate(payload + check, scheme, max_length=64).valid


@pytest.mark.parametrize(("algorithm", "payload", "check"), CUSTOM_VECTORS)
def test_custom_alphabet_vector(algorithm: LuhnModN, payload: str, check: str) -> None:
    assert compute_check_char(payload, algorithm) == check
    assert validate(payload + check, algorithm, max_length=64).valid


@pytest.mark.parametrize(("scheme", "full_id"), VALID_IDS)
def test_published_valid_id(scheme: Scheme, full_id: str) -> None:
    assert validate(full_id, scheme).valid


def test_default_scheme_is_idgen_luhn_mod_30() -> None:
    assert Scheme.LUHN30.algorithm.alphabet == "0123456789ACDEFGHJKLMNPRTUVWXY"
    assert compute_check_char("1003E") == "Y"
    assert validate("1003EY").valid


@given(st.text(alphabet=Scheme.LUHN30.algorithm.alphabet, min_size=1, max_size=20))
def test_luhn30_matches_idgen(payload: str) -> None:
    alphabet = Scheme.LUHN30.algorithm.alphabet
    assert compute_check_char(payload, Scheme.LUHN30) == idgen_check_char(payload, alphabet)


@given(st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_luhn10_matches_idgen(payload: str) -> None:
    assert compute_check_char(payload, Scheme.LUHN10) == idgen_check_char(payload, "0123456789")


# --- what each scheme catches: properties ------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.data())
def test_every_single_substitution_is_rejected(scheme: Scheme, data: st.DataObject) -> None:
    full_id = data.draw(valid_ids(scheme))
    for index, original in enumerate(full_id):
        for replacement in scheme.algorithm.alphabet.replace(original, ""):
            typo = full_id[:index] + replacement + full_id[index + 1 :]
            assert not is_valid(typo, scheme), (full_id, typo)


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.data())
def test_adjacent_transpositions_rejected_unless_undetectable(
    scheme: Scheme, data: st.DataObject
) -> None:
    full_id = data.draw(valid_ids(scheme))
    blind = undetected_transpositions(scheme)
    for index in range(len(full_id) - 1):
        left, right = full_id[index], full_id[index + 1]
        if left == right:
            continue
        swapped = full_id[:index] + right + left + full_id[index + 2 :]
        assert is_valid(swapped, scheme) == ((left, right) in blind), (full_id, swapped)


# --- what each scheme catches: brute force -----------------------------------


def swaps_missed_inside_payload(scheme: Scheme, prefix: str) -> set[tuple[str, str]]:
    """Every pair ab at a fixed place inside the payload, swapped to ba."""
    alphabet = scheme.algorithm.alphabet
    missed = set()
    for left in alphabet:
        for right in alphabet.replace(left, ""):
            full_id = append_check_char(prefix + left + right + alphabet[3], scheme)
            swapped = prefix + right + left + full_id[len(prefix) + 2 :]
            if is_valid(swapped, scheme):
                missed.add((left, right))
    return missed


def swaps_missed_at_check_char(scheme: Scheme) -> set[tuple[str, str]]:
    """Every pair (last payload char, check char), swapped.

    The check character is fixed by the payload, so for each pair a leading
    character is searched for that makes it come out right.
    """
    alphabet = scheme.algorithm.alphabet
    missed = set()
    for last in alphabet:
        for check in alphabet.replace(last, ""):
            lead = next(c for c in alphabet if compute_check_char(c + last, scheme) == check)
            if is_valid(lead + check + last, scheme):
                missed.add((last, check))
    return missed


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("prefix", ["", "7", "12"])
def test_brute_force_payload_transpositions(scheme: Scheme, prefix: str) -> None:
    assert swaps_missed_inside_payload(scheme, prefix) == undetected_transpositions(scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_brute_force_check_char_transpositions(scheme: Scheme) -> None:
    assert swaps_missed_at_check_char(scheme) == undetected_transpositions(scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("prefix", ["", "7"])
def test_brute_force_substitutions(scheme: Scheme, prefix: str) -> None:
    alphabet = scheme.algorithm.alphabet
    for original in alphabet:
        full_id = append_check_char(prefix + original + "5", scheme)
        for index in range(len(full_id)):
            for replacement in alphabet.replace(full_id[index], ""):
                typo = full_id[:index] + replacement + full_id[index + 1 :]
                assert not is_valid(typo, scheme), (full_id, typo)


# --- normalisation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1003ey", "1003EY"),
        ("1003-EY", "1003EY"),
        (" 10 03 E Y ", "1003EY"),
        ("1003\u2013EY", "1003EY"),
        ("\t1003EY\n", "1003EY"),
        ("1003\u00a0ey", "1003EY"),
    ],
)
def test_normalise_luhn30(raw: str, expected: str) -> None:
    assert normalise(raw, Scheme.LUHN30) == expected
    result = validate(raw)
    assert result.valid
    assert result.id == expected


def test_normalise_digits_schemes() -> None:
    assert normalise("2-3 6 3", Scheme.VERHOEFF) == "2363"
    assert validate("2-3 6 3", Scheme.VERHOEFF).valid
    assert validate("2468 7", Scheme.LUHN10).valid


def test_normalise_follows_a_lower_case_alphabet() -> None:
    assert normalise("ABC-DEF E", HEX6) == "abcdefe"
    assert validate("ABCDEFE", HEX6).valid


def test_normalise_keeps_case_for_a_mixed_case_alphabet() -> None:
    mixed = LuhnModN(alphabet="aA", name="mixed")
    assert normalise("aA", mixed) == "aA"


# --- validation errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "scheme", "problem", "reason"),
    [
        ("", Scheme.LUHN30, Problem.EMPTY, "ID is empty"),
        (" - \t", Scheme.LUHN30, Problem.EMPTY, "ID is empty"),
        (
            "10B3EY",
            Scheme.LUHN30,
            Problem.BAD_CHARACTER,
            "character 'B' at position 3 is not allowed in a luhn30 ID",
        ),
        (
            "10-o3EY",
            Scheme.LUHN30,
            Problem.BAD_CHARACTER,
            "character 'O' at position 3 is not allowed in a luhn30 ID",
        ),
        (
            "2468A",
            Scheme.LUHN10,
            Problem.BAD_CHARACTER,
            "character 'A' at position 5 is not allowed in a luhn10 ID",
        ),
        (
            "23.63",
            Scheme.VERHOEFF,
            Problem.BAD_CHARACTER,
            "character '.' at position 3 is not allowed in a verhoeff ID",
        ),
        ("Y", Scheme.LUHN30, Problem.BAD_LENGTH, "ID must be 2 to 32 characters"),
        ("1" * 33, Scheme.LUHN30, Problem.BAD_LENGTH, "ID must be 2 to 32 characters"),
        ("1003EX", Scheme.LUHN30, Problem.BAD_CHECK_DIGIT, "check digit is wrong"),
        ("1030EY", Scheme.LUHN30, Problem.BAD_CHECK_DIGIT, "check digit is wrong"),
        ("24678", Scheme.LUHN10, Problem.BAD_CHECK_DIGIT, "check digit is wrong"),
        ("2364", Scheme.VERHOEFF, Problem.BAD_CHECK_DIGIT, "check digit is wrong"),
    ],
)
def test_invalid_ids(raw: str, scheme: Scheme, problem: Problem, reason: str) -> None:
    result = validate(raw, scheme)
    assert not result.valid
    assert result.problem is problem
    assert result.reason == reason
    assert result.id == normalise(raw, scheme)


def test_unprintable_character_is_named_readably() -> None:
    result = validate("10\x0003EY")
    assert result.reason == "character '\\x00' at position 3 is not allowed in a luhn30 ID"


def test_length_bounds_are_configurable() -> None:
    assert validate("1003EY", min_length=6, max_length=6).valid
    result = validate("1001W2", min_length=7, max_length=10)
    assert result.problem is Problem.BAD_LENGTH
    assert result.reason == "ID must be 7 to 10 characters"


@pytest.mark.parametrize(("low", "high"), [(1, 32), (0, 32), (5, 4)])
def test_impossible_length_bounds_are_a_programming_error(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="impossible ID length bounds"):
        validate("1003EY", min_length=low, max_length=high)


@pytest.mark.parametrize("scheme", SCHEMES)
@given(raw=st.text())
def test_validate_never_raises_and_is_consistent(scheme: Scheme, raw: str) -> None:
    result = validate(raw, scheme)
    assert result.id == normalise(raw, scheme)
    assert (result.reason is None) == (result.problem is None) == result.valid


def test_compute_check_char_refuses_bad_payloads() -> None:
    with pytest.raises(ValueError, match="empty payload"):
        compute_check_char("")
    with pytest.raises(ValueError, match="'B' is not in the luhn30 alphabet"):
        compute_check_char("10B")
    with pytest.raises(ValueError, match="'a' is not a digit"):
        compute_check_char("2a", Scheme.VERHOEFF)


@pytest.mark.parametrize("alphabet", ["", "0", "012", "00", "0123456789ACDEFGHJKLMNPRTUVWX"])
def test_luhn_mod_n_refuses_unusable_alphabets(alphabet: str) -> None:
    with pytest.raises(ValueError, match="alphabet"):
        LuhnModN(alphabet=alphabet, name="bad")
