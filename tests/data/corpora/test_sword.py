"""Tests of the SWORD zText reader: on synthetic modules, and on Debian's real ones if installed."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from seqlab.data.corpora.sword import (
    DEFAULT_SWORD_ROOT,
    SwordFormatError,
    SwordModuleNotFoundError,
    Verse,
    find_module,
    osis_to_text,
    parse_conf,
    read_verses,
)
from seqlab.data.corpora.versification_kjv import KJV_BOOKS

Ref = tuple[str, int, int]


def write_ztext_module(
    root: Path, name: str, entries: dict[Ref, str], links: dict[Ref, int] | None = None
) -> Path:
    """Writes a KJV-versified zText module with ``entries`` under the SWORD ``root``.

    Args:
        root: SWORD root to create ``mods.d/`` and ``modules/`` in.
        name: Module name.
        entries: OSIS text per (book, chapter, verse); all other verses are empty.
        links: (book, chapter, first verse) -> last verse of a linked range.

    Returns:
        ``root``.
    """
    links = links or {}
    data_dir = root / "modules" / "texts" / "ztext" / name.lower()
    data_dir.mkdir(parents=True)
    (root / "mods.d").mkdir(exist_ok=True)
    (root / "mods.d" / f"{name.lower()}.conf").write_text(
        f"[{name}]\nDataPath=./modules/texts/ztext/{name.lower()}/\nModDrv=zText\n"
        "SourceType=OSIS\nEncoding=UTF-8\nCompressType=ZIP\nVersification=KJV\n"
        "Version=1.0\nLang=en\nAbout=A test module \\\n  over two lines\n"
    )
    for testament in ("ot", "nt"):
        block = bytearray()
        records = [(0, 0, 0), (0, 0, 0)]  # empty slot, testament heading
        for book in (b for b in KJV_BOOKS if b.testament == testament):
            records.append((0, 0, 0))  # book intro
            for chapter, num_verses in enumerate(book.verse_counts, start=1):
                records.append((0, 0, 0))  # chapter intro
                linked_until, linked_record = 0, (0, 0, 0)
                for verse in range(1, num_verses + 1):
                    ref = (book.osis_name, chapter, verse)
                    if verse <= linked_until:
                        records.append(linked_record)
                        continue
                    data = entries.get(ref, "").encode("utf-8")
                    record = (0, len(block), len(data)) if data else (0, 0, 0)
                    block += data
                    records.append(record)
                    if ref in links:
                        linked_until, linked_record = links[ref], record
        compressed = zlib.compress(bytes(block))
        (data_dir / f"{testament}.bzz").write_bytes(compressed)
        (data_dir / f"{testament}.bzs").write_bytes(
            struct.pack("<III", 0, len(compressed), len(block))
        )
        (data_dir / f"{testament}.bzv").write_bytes(
            b"".join(struct.pack("<IIH", *record) for record in records)
        )
    return root


def verse_map(verses: list[Verse]) -> dict[Ref, Verse]:
    return {(v.book, v.chapter, v.verse): v for v in verses}


def test_kjv_versification_totals() -> None:
    assert len(KJV_BOOKS) == 66
    assert [b.osis_name for b in KJV_BOOKS[:2]] == ["Gen", "Exod"]
    assert KJV_BOOKS[-1].osis_name == "Rev"
    assert sum(b.testament == "ot" for b in KJV_BOOKS) == 39
    assert sum(len(b.verse_counts) for b in KJV_BOOKS) == 1189
    assert sum(sum(b.verse_counts) for b in KJV_BOOKS) == 31102
    assert sum(sum(b.verse_counts) for b in KJV_BOOKS if b.testament == "nt") == 7957


def test_osis_to_text_drops_notes_and_headings_and_keeps_words() -> None:
    osis = (
        '<title type="section">The Creation</title><w lemma="strong:H07225">In</w> the '
        '<w lemma="strong:H1254 strong:H0430">beginning</w>,<note placement="foot">'
        '<reference type="annotateRef">1.1 </reference>or, <hi>first</hi></note> '
        '<title canonical="true" type="psalm">A Psalm.</title>Tom &amp; Jerry &lt;3 '
        "<transChange>con</transChange><w>tigo</w> \\nd LORD\\+nd* \u00b6 end ."
    )
    text, strongs = osis_to_text(osis)
    assert text == "In the beginning, A Psalm. Tom & Jerry <3 con tigo LORD end."
    assert strongs == {"H7225", "H1254", "H430"}


def test_osis_to_text_keeps_words_split_by_inline_tags() -> None:
    assert osis_to_text('<w lemma="strong:G1">tear</w>s, pregunt\u00e1ndo<w>le</w>')[0] == (
        "tears, pregunt\u00e1ndole"
    )


def test_parse_conf_joins_continuation_lines(tmp_path: Path) -> None:
    write_ztext_module(tmp_path, "testMod", {})
    conf = parse_conf(tmp_path / "mods.d" / "testmod.conf")
    assert conf["testMod"]["About"] == "A test module \n  over two lines"
    assert conf["testMod"]["Versification"] == "KJV"


def test_synthetic_module_reads_verses_and_linked_ranges(tmp_path: Path) -> None:
    entries = {
        ("Gen", 1, 1): "<w>In</w> the beginning.",
        ("Gen", 1, 2): "And the earth<note>n</note> was.",
        ("Gen", 50, 26): "So Joseph died.",
        ("Matt", 1, 1): "The book.",
        ("Matt", 1, 2): "Abraham begat Isaac, and Isaac begat Jacob.",
        ("Rev", 22, 21): "Amen.",
    }
    root = write_ztext_module(tmp_path, "testMod", entries, links={("Matt", 1, 2): 4})
    verses = read_verses("testMod", root)
    assert len(verses) == 31102 - 2
    by_ref = verse_map(verses)
    assert by_ref[("Gen", 1, 1)].text == "In the beginning."
    assert by_ref[("Gen", 1, 2)].text == "And the earth was."
    assert by_ref[("Gen", 1, 3)].text == ""
    assert by_ref[("Gen", 50, 26)].text == "So Joseph died."
    linked = by_ref[("Matt", 1, 2)]
    assert (linked.verse, linked.last_verse) == (2, 4)
    assert linked.text == entries[("Matt", 1, 2)]
    assert ("Matt", 1, 3) not in by_ref and ("Matt", 1, 4) not in by_ref
    assert by_ref[("Matt", 1, 5)].last_verse == 5
    assert by_ref[("Rev", 22, 21)].text == "Amen."


def test_missing_module_names_package_and_command(tmp_path: Path) -> None:
    with pytest.raises(SwordModuleNotFoundError) as info:
        find_module("engKJV2006eb", tmp_path)
    message = str(info.value)
    assert "sword-text-kjv" in message
    assert "seqlab data prepare bible_en_es" in message


def test_index_that_does_not_match_versification_is_an_error(tmp_path: Path) -> None:
    root = write_ztext_module(tmp_path, "testMod", {("Gen", 1, 1): "In."})
    bzv = root / "modules" / "texts" / "ztext" / "testmod" / "nt.bzv"
    bzv.write_bytes(bzv.read_bytes()[:-10])
    with pytest.raises(SwordFormatError, match="needs 8246"):
        read_verses("testMod", root)


def _installed(module: str) -> bool:
    try:
        find_module(module, DEFAULT_SWORD_ROOT)
    except SwordModuleNotFoundError:
        return False
    return True


needs_kjv_rv = pytest.mark.skipif(
    not (_installed("engKJV2006eb") and _installed("spaRV1909eb")),
    reason="SWORD modules engKJV2006eb/spaRV1909eb are not installed under /usr/share/sword "
    "(apt-get install sword-text-kjv sword-text-sparv)",
)


@pytest.fixture(scope="module")
def kjv() -> list[Verse]:
    return read_verses("engKJV2006eb", DEFAULT_SWORD_ROOT)


@pytest.fixture(scope="module")
def rv1909() -> list[Verse]:
    return read_verses("spaRV1909eb", DEFAULT_SWORD_ROOT)


@needs_kjv_rv
def test_real_module_info() -> None:
    info = find_module("engKJV2006eb")
    assert info.versification == "KJV"
    assert info.source_type == "OSIS"
    assert info.version
    assert (info.data_dir / "ot.bzz").is_file()


@needs_kjv_rv
def test_kjv_verses_are_clean_text(kjv: list[Verse]) -> None:
    assert len(kjv) == 31102  # the KJV module links no verses
    by_ref = verse_map(kjv)
    assert by_ref[("Gen", 1, 1)].text == "In the beginning God created the heaven and the earth."
    assert by_ref[("Gen", 1, 1)].strongs == {"H7225", "H430", "H1254", "H8064", "H853", "H776"}
    # A canonical psalm title stays, as the first words of verse 1.
    assert by_ref[("Ps", 3, 1)].text == (
        "A Psalm of David, when he fled from Absalom his son. LORD, how are they increased "
        "that trouble me! many are they that rise up against me."
    )
    # A footnote and an acrostic heading (a non-canonical title) go.
    assert by_ref[("Ps", 119, 1)].text == (
        "Blessed are the undefiled in the way, who walk in the law of the LORD."
    )
    assert by_ref[("Ps", 119, 9)].text.startswith("Wherewithal shall a young man")
    # A leftover USFM marker ("\\nd LORD") and a paragraph mark go.
    assert by_ref[("Exod", 6, 3)].text.endswith("but by my name JEHOVAH was I not known to them.")
    assert by_ref[("Gen", 4, 9)].text.startswith("And the LORD said unto Cain")
    # An epistle's subscription is a non-canonical title in this module.
    assert by_ref[("Heb", 13, 25)].text == "Grace be with you all. Amen."
    for verse in kjv:
        assert verse.text, verse
        assert not any(c in verse.text for c in "<>&\\\u00b6\t\n"), verse
        assert verse.text == verse.text.strip() and "  " not in verse.text, verse


@needs_kjv_rv
def test_rv1909_verses_are_clean_text(rv1909: list[Verse]) -> None:
    assert len(rv1909) == 31102
    by_ref = verse_map(rv1909)
    # The reader keeps the module's drop cap; the corpus preparer re-cases it.
    assert by_ref[("Gen", 1, 1)].text == "EN el principio cri\u00f3 Dios los cielos y la tierra."
    # Phrases that the module glues ("</transChange><w>") get their space back.
    assert by_ref[("Ps", 118, 5)].text.endswith("poni\u00e9ndome en anchura.")
    # The module leaves the verses it numbers differently empty.
    assert by_ref[("Job", 38, 39)].text == ""
    assert sum(1 for v in rv1909 if not v.text) == 18
    for verse in rv1909:
        assert not any(c in verse.text for c in "<>&\\\t\n"), verse
