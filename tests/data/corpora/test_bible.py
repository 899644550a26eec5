"""Tests of the Bible corpus preparer: alignment, splits, caching, and the real en-es corpus."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from seqlab.data.corpora.bible import (
    DEV_BOOKS,
    TEST_BOOKS,
    VersePair,
    align_verses,
    find_misaligned,
    prepare_bible_monolingual,
    prepare_bible_pair,
    resolve_sword_root,
    restore_drop_caps,
    split_of_book,
)
from seqlab.data.corpora.sword import (
    DEFAULT_SWORD_ROOT,
    SwordModuleNotFoundError,
    Verse,
    find_module,
)
from seqlab.data.corpora.versification_kjv import KJV_BOOKS

SOURCE, TARGET = "engKJV2006eb", "spaRV1909eb"


def _verse(ref: str, text: str, last_verse: int | None = None, strongs: str = "") -> Verse:
    book, chapter, verse = ref.split(".")
    return Verse(
        book,
        int(chapter),
        int(verse),
        last_verse or int(verse),
        text,
        frozenset(strongs.split()),
    )


def _book_of(ref: str) -> str:
    return ref.split(".", 1)[0]


def test_align_merges_linked_ranges_into_their_union() -> None:
    source = [
        _verse("Gen.1.1", "s1", last_verse=2),
        _verse("Gen.1.3", "s3"),
        _verse("Gen.1.4", "s4"),
        _verse("Gen.1.5", "s5"),
    ]
    target = [
        _verse("Gen.1.1", "t1"),
        _verse("Gen.1.2", "t2", last_verse=3),
        _verse("Gen.1.4", ""),
        _verse("Gen.1.5", "t5"),
    ]
    pairs = align_verses(source, target)
    assert [(p.ref, p.source, p.target) for p in pairs] == [
        ("Gen.1.1-Gen.1.3", "s1 s3", "t1 t2"),
        ("Gen.1.4", "s4", ""),
        ("Gen.1.5", "s5", "t5"),
    ]


def test_find_misaligned_flags_shifted_and_overlong_pairs() -> None:
    def pair(verse: int, source: str, target: str, src: str, tgt: str) -> VersePair:
        src_strongs, tgt_strongs = frozenset(src.split()), frozenset(tgt.split())
        return VersePair("Num", 13, verse, verse, source, target, src_strongs, tgt_strongs)

    words = "w " * 10
    pairs = [
        pair(1, words, words, "H1 H2 H3", "H1 H2 H3"),
        pair(2, words, words, "H4 H5 H6", "H1 H2 H7"),  # target is shifted by one verse
        pair(3, words, words, "H7 H8 H9", "H4 H5 H6"),
        pair(4, words, words * 4, "H10", "H10"),  # one side four times longer
        pair(5, "", words, "", "H11"),
    ]
    assert find_misaligned(pairs) == {1, 2, 3}


def test_restore_drop_caps_recases_chapter_openings_only_in_drop_cap_modules() -> None:
    verses = [
        _verse("Gen.1.1", "EN el principio crio Dios."),
        _verse("Gen.1.2", "Y la tierra era. En fin, dijo Dios: SANTIDAD."),
        _verse("Gen.2.1", "Y FUERON acabados por Dios."),
        _verse("Ps.3.1", "Salmo de David. JEHOVA es mi pastor, dijo Jehova."),
        _verse("Ps.4.1", "Salmo. A TI, oh Dios."),
        _verse("Ps.119.1", "ALEPH. BIENAVENTURADOS los perfectos."),
    ]
    restored = [v.text for v in restore_drop_caps(verses)]
    assert restored == [
        "En el principio crio Dios.",
        "Y la tierra era. En fin, dijo Dios: SANTIDAD.",
        "Y fueron acabados por Dios.",
        "Salmo de David. Jehova es mi pastor, dijo Jehova.",
        "Salmo. A ti, oh Dios.",
        "ALEPH. Bienaventurados los perfectos.",
    ]
    english = [_verse("Gen.1.1", "And the LORD said."), _verse("Gen.2.1", "GOD is.")]
    assert restore_drop_caps(english) == english


def test_split_of_book() -> None:
    assert split_of_book("Ruth") == "dev"
    assert split_of_book("3John") == "test"
    assert split_of_book("Gen") == "train"
    assert set(DEV_BOOKS) | set(TEST_BOOKS) <= {b.osis_name for b in KJV_BOOKS}


def _write_module(root: Path, name: str, entries: dict[str, str], links: dict[str, int]) -> None:
    """A tiny KJV-versified zText module; ``entries`` by "Book.chapter.verse"."""
    data_dir = root / "modules" / name
    data_dir.mkdir(parents=True)
    (root / "mods.d").mkdir(exist_ok=True)
    (root / "mods.d" / f"{name}.conf").write_text(
        f"[{name}]\nDataPath=./modules/{name}/\nModDrv=zText\nSourceType=OSIS\n"
        "Encoding=UTF-8\nVersification=KJV\nVersion=0.1\n"
    )
    for testament in ("ot", "nt"):
        block, records = bytearray(), [(0, 0, 0), (0, 0, 0)]
        for book in (b for b in KJV_BOOKS if b.testament == testament):
            records.append((0, 0, 0))
            for chapter, num_verses in enumerate(book.verse_counts, start=1):
                records.append((0, 0, 0))
                for verse in range(1, num_verses + 1):
                    ref = f"{book.osis_name}.{chapter}.{verse}"
                    first = next((f for f, last in links.items() if _within(ref, f, last)), ref)
                    if first != ref:
                        records.append(records[-1])
                        continue
                    data = entries.get(ref, "").encode()
                    records.append((0, len(block), len(data)) if data else (0, 0, 0))
                    block += data
        compressed = zlib.compress(bytes(block))
        (data_dir / f"{testament}.bzz").write_bytes(compressed)
        (data_dir / f"{testament}.bzs").write_bytes(
            struct.pack("<III", 0, len(compressed), len(block))
        )
        (data_dir / f"{testament}.bzv").write_bytes(
            b"".join(struct.pack("<IIH", *r) for r in records)
        )


def _within(ref: str, first: str, last: int) -> bool:
    book, chapter, verse = ref.rsplit(".", 2)
    first_book, first_chapter, first_verse = first.rsplit(".", 2)
    return (book, chapter) == (first_book, first_chapter) and int(first_verse) < int(verse) <= last


def test_prepare_pair_on_synthetic_modules(tmp_path: Path) -> None:
    root = tmp_path / "sword"
    _write_module(
        root,
        "src",
        {
            "Gen.1.1": "In the beginning. And the earth.",
            "Ruth.1.1": "Now it came.",
            "Jude.1.1": "Jude, the servant.",
            "Jude.1.2": "Mercy unto you.",
        },
        links={"Gen.1.1": 2},
    )
    _write_module(
        root,
        "tgt",
        {
            "Gen.1.1": "EN el principio.",
            "Gen.1.2": "Y la tierra.",
            "Ruth.1.1": "Y ACONTECI\u00d3 en.",
            "Jude.1.1": "JUDAS, siervo. Misericordia.",
        },
        links={"Jude.1.1": 2},
    )
    paths = prepare_bible_pair("src", "tgt", tmp_path / "out", sword_root=root)
    assert paths["train"].read_text() == (
        "In the beginning. And the earth.\tEn el principio. Y la tierra.\n"
    )
    assert paths["train_refs"].read_text() == "Gen.1.1-Gen.1.2\n"
    assert paths["dev"].read_text() == "Now it came.\tY aconteci\u00f3 en.\n"
    assert paths["test"].read_text() == (
        "Jude, the servant. Mercy unto you.\tJudas, siervo. Misericordia.\n"
    )
    meta = json.loads(paths["meta"].read_text())
    assert {s: m["pairs"] for s, m in meta["splits"].items()} == {"train": 1, "dev": 1, "test": 1}
    assert meta["modules"]["target"]["version"] == "0.1"
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_missing_modules_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(SwordModuleNotFoundError, match="sword-text-kjv"):
        resolve_sword_root([SOURCE], tmp_path, sword_root=tmp_path)


def _apt_knows(package: str) -> bool:
    if shutil.which("apt-cache") is None or shutil.which("dpkg-deb") is None:
        return False
    result = subprocess.run(["apt-cache", "show", package], capture_output=True, check=False)
    return result.returncode == 0


@pytest.mark.slow
def test_modules_are_fetched_into_the_cache_when_not_installed(tmp_path: Path) -> None:
    if not _apt_knows("sword-text-kjv"):
        pytest.skip("apt's package lists lack sword-text-kjv (run 'apt-get update')")
    cache = tmp_path / "debian"
    root = resolve_sword_root([SOURCE], cache, system_root=tmp_path / "not-installed")
    assert root == cache / "root" / "usr" / "share" / "sword"
    assert find_module(SOURCE, root).versification == "KJV"
    assert resolve_sword_root([SOURCE], cache, system_root=tmp_path / "not-installed") == root


def _installed() -> bool:
    try:
        resolve_sword_root([SOURCE, TARGET], Path("/nonexistent"), sword_root=DEFAULT_SWORD_ROOT)
    except SwordModuleNotFoundError:
        return False
    return True


needs_kjv_rv = pytest.mark.skipif(
    not _installed(),
    reason="SWORD modules engKJV2006eb/spaRV1909eb are not installed under /usr/share/sword "
    "(apt-get install sword-text-kjv sword-text-sparv)",
)


@pytest.fixture(scope="session")
def bible_en_es(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("bible") / "bible_en_es"
    return prepare_bible_pair(SOURCE, TARGET, out_dir, sword_root=DEFAULT_SWORD_ROOT)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@needs_kjv_rv
def test_bible_en_es_pairs_are_clean(bible_en_es: dict[str, Path]) -> None:
    train, train_refs = _lines(bible_en_es["train"]), _lines(bible_en_es["train_refs"])
    assert len(train) == len(train_refs)
    first = dict(zip(train_refs, train, strict=True))["Gen.1.1"]
    assert first == (
        "In the beginning God created the heaven and the earth.\t"
        "En el principio cri\u00f3 Dios los cielos y la tierra."
    )
    for split in ("train", "dev", "test"):
        for line in _lines(bible_en_es[split]):
            source, target = line.split("\t")  # exactly one tab
            assert source and target
            assert not any(c in line for c in "<>&\\\u00b6"), line


@needs_kjv_rv
def test_bible_en_es_splits_hold_whole_books(bible_en_es: dict[str, Path]) -> None:
    refs = {split: _lines(bible_en_es[f"{split}_refs"]) for split in ("train", "dev", "test")}
    assert {_book_of(r) for r in refs["dev"]} == set(DEV_BOOKS)
    assert {_book_of(r) for r in refs["test"]} == set(TEST_BOOKS)
    assert not {_book_of(r) for r in refs["train"]} & (set(DEV_BOOKS) | set(TEST_BOOKS))
    assert len({_book_of(r) for r in refs["train"]}) == 66 - len(DEV_BOOKS) - len(TEST_BOOKS)
    all_refs = refs["train"] + refs["dev"] + refs["test"]
    assert len(all_refs) == len(set(all_refs))  # no verse in two splits, nor twice in one


@needs_kjv_rv
def test_bible_en_es_counts(bible_en_es: dict[str, Path]) -> None:
    meta = json.loads(bible_en_es["meta"].read_text())
    counts = {split: m["pairs"] for split, m in meta["splits"].items()}
    assert 30_500 <= sum(counts.values()) <= 31_102
    assert 140 <= counts["dev"] <= 158  # Ruth 85 + Jonah 48 + Philemon 25 verses
    assert 250 <= counts["test"] <= 265  # Esther 167 + Titus 46 + Jude 25 + 2-3 John 27
    assert meta["dropped"]["misaligned"] < 300
    assert 0.7e6 < sum(m["source_words"] for m in meta["splits"].values()) < 0.85e6
    assert meta["modules"]["source"]["debian_package"] == "sword-text-kjv"
    assert meta["modules"]["target"]["version"]
    for split, count in counts.items():
        assert len(_lines(bible_en_es[split])) == count


@needs_kjv_rv
def test_bible_en_es_drops_misnumbered_verses(bible_en_es: dict[str, Path]) -> None:
    # RV1909 numbers Jonah 2 as the Hebrew text does (KJV 1:17 is its 2:1).
    refs = set(_lines(bible_en_es["dev_refs"]))
    assert "Jonah.2.5" not in refs
    assert "Jonah.1.16" in refs


@needs_kjv_rv
def test_bible_en_es_rerun_is_a_no_op(bible_en_es: dict[str, Path]) -> None:
    stamps = {name: path.stat().st_mtime_ns for name, path in bible_en_es.items()}
    start = time.perf_counter()
    again = prepare_bible_pair(
        SOURCE, TARGET, bible_en_es["meta"].parent, sword_root=DEFAULT_SWORD_ROOT
    )
    assert time.perf_counter() - start < 0.5
    assert again == bible_en_es
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == stamps


@needs_kjv_rv
def test_bible_monolingual_uses_the_same_splits(tmp_path: Path) -> None:
    paths = prepare_bible_monolingual(TARGET, tmp_path / "rv1909", sword_root=DEFAULT_SWORD_ROOT)
    lines = {split: _lines(paths[split]) for split in ("train", "dev", "test")}
    assert lines["train"][0] == "En el principio cri\u00f3 Dios los cielos y la tierra."
    assert sum(len(v) for v in lines.values()) == 31102 - 18  # the module's empty verses
    assert {_book_of(r) for r in _lines(paths["test_refs"])} == set(TEST_BOOKS)
