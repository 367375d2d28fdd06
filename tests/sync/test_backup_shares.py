"""The archive key split K of N (issue 12, point 7): any K shares give it back, K-1 never."""

from __future__ import annotations

import io
import itertools
import secrets

import pytest
import segno
from hypothesis import assume, given
from hypothesis import strategies as st

from sync.backup import cli as backup_cli
from sync.backup import shares
from sync.backup.shares import Share, ShareError

ARCHIVE = "0123456789ABCDEF"


@pytest.mark.parametrize(("k", "n"), [(2, 2), (2, 3), (3, 4), (3, 5), (5, 7)])
def test_every_k_of_n_shares_give_the_key_back_and_k_minus_1_do_not(k: int, n: int) -> None:
    key = secrets.token_bytes(32)
    made = shares.split(key, ARCHIVE, k, n)
    assert [s.x for s in made] == list(range(1, n + 1))
    for chosen in itertools.combinations(made, k):
        assert shares.combine(shares.consistent(chosen, ARCHIVE)) == key
    for chosen in itertools.combinations(made, k - 1):
        with pytest.raises(ShareError, match=f"needs {k} of its {n}"):
            shares.consistent(chosen, ARCHIVE)
        # Interpolating too few points gives a key, but never this one.
        assert shares.combine(chosen) != key


def test_no_share_holds_the_key_or_either_half_of_it() -> None:
    key = secrets.token_bytes(32)
    for share in shares.split(key, ARCHIVE, 3, 4):
        assert key[:16] not in share.y and key[16:] not in share.y
        assert key[:16].hex().upper() not in share.text()


def test_two_backups_of_one_key_share_nothing() -> None:
    """Fresh random polynomials: splitting again gives other shares (none can be mixed in)."""
    key = secrets.token_bytes(32)
    first, second = shares.split(key, ARCHIVE, 3, 4), shares.split(key, ARCHIVE, 3, 4)
    assert all(a.y != b.y for a, b in zip(first, second, strict=True))


def test_a_share_survives_its_text_case_and_spaces() -> None:
    share = shares.split(secrets.token_bytes(32), ARCHIVE, 3, 4)[1]
    text = share.text()
    assert text.startswith(f"FSB1-{ARCHIVE}-3OF4-2-")
    assert shares.parse(text) == share
    spaced = " ".join(text[i : i + 5] for i in range(0, len(text), 5)).lower() + "\n"
    assert shares.parse(spaced) == share


# One share for every example: a share's text is random (the polynomial's coefficients), and
# Hypothesis replays an example only if what it draws from does not change between runs.
TYPED = shares.split(bytes(range(32)), ARCHIVE, 3, 4)[2].text()
SYMBOLS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"


@given(st.integers(0, len(TYPED) - 1), st.sampled_from(SYMBOLS))
def test_any_one_character_typo_is_caught_by_the_check(where: int, typo: str) -> None:
    assume(typo != TYPED[where])
    with pytest.raises(ShareError):
        shares.parse(TYPED[:where] + typo + TYPED[where + 1 :], "share 3")


def test_a_typo_names_the_share_and_says_what_to_do() -> None:
    text = shares.split(bytes(range(32)), ARCHIVE, 3, 4)[0].text()
    typo = text[:30] + ("A" if text[30] != "A" else "B") + text[31:]
    with pytest.raises(ShareError, match="the share on line 2 has a typing mistake"):
        shares.parse(typo, "the share on line 2")
    with pytest.raises(ShareError, match="is not a fieldsync backup share"):
        shares.parse("hello", "the share on line 1")


def test_shares_of_another_backup_twice_given_or_altered_are_refused() -> None:
    made = shares.split(secrets.token_bytes(32), ARCHIVE, 3, 4)
    other = shares.split(secrets.token_bytes(32), "FEDCBA9876543210", 3, 4)
    with pytest.raises(ShareError, match="belongs to backup FEDCBA9876543210"):
        shares.consistent([made[0], made[1], other[2]], ARCHIVE)
    with pytest.raises(ShareError, match="share 2 was given twice"):
        shares.consistent([made[0], made[1], made[1]], ARCHIVE)
    forged = Share(ARCHIVE, 3, 4, 2, bytes(32))
    with pytest.raises(ShareError, match="two different texts for share 2"):
        shares.consistent([made[0], made[1], forged], ARCHIVE)
    with pytest.raises(ShareError, match="disagree"):
        shares.consistent([made[0], made[1], Share(ARCHIVE, 2, 4, 3, made[2].y)], ARCHIVE)
    with pytest.raises(ShareError, match="no shares given"):
        shares.consistent([], ARCHIVE)


@pytest.mark.parametrize(
    ("k", "n", "says"),
    [
        (1, 4, "one person open the backup alone"),
        (0, 4, "one person open the backup alone"),
        (5, 4, "more than the 4 shares made"),
        (3, 256, "at most 255 shares"),
        (2, 1, "give 2 or more"),
        (2, -4, "give 2 or more"),
    ],
)
def test_impossible_or_pointless_splits_are_refused(k: int, n: int, says: str) -> None:
    with pytest.raises(ShareError, match=says):
        shares.split(secrets.token_bytes(32), ARCHIVE, k, n)


def test_the_largest_split_works() -> None:
    key = secrets.token_bytes(32)
    made = shares.split(key, ARCHIVE, 2, 255)
    assert shares.combine(shares.consistent([made[0], made[254]], ARCHIVE)) == key
    assert shares.parse(made[254].text()).x == 255


# Half blocks as segno draws them for a terminal: (top, bottom) module light.
_HALVES = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}


def _drawn_matrix(drawing: str) -> list[list[bool]]:
    """The dark modules of a QR code drawn with half blocks, border included."""
    rows: list[list[bool]] = []
    for line in drawing.splitlines():
        cells = [_HALVES[c] for c in line]
        rows += [[not top for top, _ in cells], [not bottom for _, bottom in cells]]
    return rows


def _drawings(output: str) -> list[tuple[str, str]]:
    """(label, drawing) of each share shown."""
    found: list[tuple[str, list[str]]] = []
    for line in output.splitlines():
        if line.startswith("share ") and line.endswith(":"):
            found.append((line, []))
        else:
            found[-1][1].append(line)
    return [(label, "\n".join(lines)) for label, lines in found]


def test_at_a_terminal_each_share_is_drawn_as_a_qr_code_of_its_text() -> None:
    made = shares.split(secrets.token_bytes(32), ARCHIVE, 3, 4)
    out = io.StringIO()
    backup_cli.show_qr(made, out)
    shown = _drawings(out.getvalue())
    assert [label for label, _ in shown] == [f"{s.label()}:" for s in made]
    for share, (_, drawing) in zip(made, shown, strict=True):
        expected = [[bool(m) for m in row] for row in segno.make(share.text(), error="m").matrix]
        dark = _drawn_matrix(drawing)
        border = next(i for i, row in enumerate(dark) if any(row))
        inner = [row[border : border + len(expected)] for row in dark[border:]]
        assert inner[: len(expected)] == expected
