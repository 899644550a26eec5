"""Bible corpora from Debian's SWORD modules: verse-aligned translation pairs and monolingual
text, split by whole books (DATA.md, "Machine translation: the Bible").

``prepare_bible_pair`` pairs two modules verse by verse and writes ``train.tsv``, ``dev.tsv``,
``test.tsv`` (source TAB target), ``*.refs`` (the OSIS reference of each line) and
``meta.json``; ``prepare_bible_monolingual`` writes ``*.txt`` for language modeling. Both are
no-ops when their outputs already exist. The modules are read from ``/usr/share/sword`` when
installed there, else fetched without root with ``apt-get download`` into a package cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from seqlab.data.corpora.sword import (
    DEBIAN_PACKAGES,
    DEFAULT_SWORD_ROOT,
    ModuleInfo,
    SwordModuleNotFoundError,
    Verse,
    find_module,
    read_verses,
)

FORMAT_VERSION = 1
"""Bumped whenever the prepared files change, so that old caches are rebuilt."""

SPLITS = ("train", "dev", "test")
DEV_BOOKS = ("Ruth", "Jonah", "Phlm")
"""OSIS names of the books held out for development."""
TEST_BOOKS = ("Esth", "Titus", "Jude", "2John", "3John")
"""OSIS names of the books held out for testing."""

MAX_LENGTH_RATIO = 3.0
"""Pairs whose word counts differ by more than this factor are dropped as misaligned."""
SHIFT_WINDOW = 6
"""How many neighbouring segments to compare when looking for a verse-number shift."""
MAX_SHIFTED_OVERLAP = 0.5
"""A pair may be shifted only if its Strong's-number overlap (Jaccard) is below this."""
MIN_GAIN = 0.25
"""How much better a shifted or extended pairing must overlap to flag a pair."""

_WORD = re.compile(r"\w+")
_SENTENCE_END = (".", "!", "?", ":")


@dataclass(frozen=True)
class VersePair:
    """Aligned text of one verse, or of a verse range, in two translations."""

    book: str
    """OSIS book name."""
    chapter: int
    """Chapter number."""
    first_verse: int
    """First verse of the segment."""
    last_verse: int
    """Last verse of the segment (a range when a side links verses)."""
    source: str
    """Source-language text; empty if the source module lacks the verses."""
    target: str
    """Target-language text; empty if the target module lacks the verses."""
    source_strongs: frozenset[str] = frozenset()
    """Strong's numbers of the source words (empty if the module has none)."""
    target_strongs: frozenset[str] = frozenset()
    """Strong's numbers of the target words (empty if the module has none)."""

    @property
    def ref(self) -> str:
        """OSIS reference, e.g. ``"Gen.1.1"`` or ``"Gen.1.1-Gen.1.2"`` for a range."""
        first = f"{self.book}.{self.chapter}.{self.first_verse}"
        if self.last_verse == self.first_verse:
            return first
        return f"{first}-{self.book}.{self.chapter}.{self.last_verse}"


def split_of_book(book: str) -> str:
    """The split (``"train"``, ``"dev"`` or ``"test"``) that holds the OSIS ``book``."""
    if book in DEV_BOOKS:
        return "dev"
    if book in TEST_BOOKS:
        return "test"
    return "train"


def align_verses(source: Sequence[Verse], target: Sequence[Verse]) -> list[VersePair]:
    """Pairs two translations by verse reference.

    Where either side links verses into a range, the segment is the union of the overlapping
    ranges of both sides, so that both texts cover the same verses. Segments that one side
    lacks altogether keep an empty text on that side.

    Args:
        source: Verses of the source module, as from :func:`read_verses`.
        target: Verses of the target module.

    Returns:
        The segments in canonical order (book order of ``source``).
    """
    source_chapters = _by_chapter(source)
    target_chapters = _by_chapter(target)
    chapter_order = list(source_chapters) + [c for c in target_chapters if c not in source_chapters]
    pairs: list[VersePair] = []
    for book, chapter in chapter_order:
        source_verses = source_chapters.get((book, chapter), [])
        target_verses = target_chapters.get((book, chapter), [])
        source_by_verse = {v.verse: v for v in source_verses}
        target_by_verse = {v.verse: v for v in target_verses}
        for first, last in _common_ranges(source_verses + target_verses):
            numbers = range(first, last + 1)
            src = [source_by_verse[n] for n in numbers if n in source_by_verse]
            tgt = [target_by_verse[n] for n in numbers if n in target_by_verse]
            pairs.append(
                VersePair(
                    book,
                    chapter,
                    first,
                    last,
                    " ".join(v.text for v in src if v.text),
                    " ".join(v.text for v in tgt if v.text),
                    frozenset().union(*(v.strongs for v in src)),
                    frozenset().union(*(v.strongs for v in tgt)),
                )
            )
    return pairs


def _by_chapter(verses: Iterable[Verse]) -> dict[tuple[str, int], list[Verse]]:
    chapters: dict[tuple[str, int], list[Verse]] = {}
    for verse in verses:
        chapters.setdefault((verse.book, verse.chapter), []).append(verse)
    return chapters


def _common_ranges(verses: Iterable[Verse]) -> list[tuple[int, int]]:
    """Merges the verse ranges of both sides into the finest ranges that none straddles."""
    ranges: list[tuple[int, int]] = []
    for first, last in sorted((v.verse, v.last_verse) for v in verses):
        if ranges and first <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


def find_misaligned(pairs: Sequence[VersePair]) -> set[int]:
    """Indices of pairs whose two sides are evidently not the same verses.

    Some modules number a few chapters differently from their declared versification (the
    RV1909 keeps the Hebrew numbering in Num 13, 1 Sam 24, Jonah 2, Job 39-40, ...), which
    shifts their text against the slots, with one verse holding two at the end of the shift.
    A pair is flagged when the word counts differ by more than ``MAX_LENGTH_RATIO``, or when
    both sides carry Strong's numbers and either a nearby target segment of the same book
    overlaps the source clearly better than its own (a shift), or the overlap gets clearly
    better when one side takes in the neighbouring verse (a verse split differently).

    Args:
        pairs: Segments in canonical order, as from :func:`align_verses`.

    Returns:
        The indices into ``pairs`` to drop.
    """
    flagged: set[int] = set()
    for index, pair in enumerate(pairs):
        if not pair.source or not pair.target:
            continue
        source_words, target_words = len(pair.source.split()), len(pair.target.split())
        ratio = max(source_words, target_words) / min(source_words, target_words)
        if ratio > MAX_LENGTH_RATIO:
            flagged.add(index)
            continue
        if not pair.source_strongs or not pair.target_strongs:
            continue
        overlap = _jaccard(pair.source_strongs, pair.target_strongs)
        if overlap < MAX_SHIFTED_OVERLAP and _shifted_overlap(pairs, index) >= overlap + MIN_GAIN:
            flagged.add(index)
        elif overlap <= 1.0 - MIN_GAIN and _spilled_overlap(pairs, index) >= overlap + MIN_GAIN:
            flagged.add(index)
    return flagged


def _shifted_overlap(pairs: Sequence[VersePair], index: int) -> float:
    """Best overlap of pair ``index``'s source with a nearby target of the same book."""
    pair = pairs[index]
    lo, hi = max(0, index - SHIFT_WINDOW), min(len(pairs), index + SHIFT_WINDOW + 1)
    return max(
        (
            _jaccard(pair.source_strongs, pairs[other].target_strongs)
            for other in range(lo, hi)
            if other != index and pairs[other].book == pair.book
        ),
        default=0.0,
    )


def _spilled_overlap(pairs: Sequence[VersePair], index: int) -> float:
    """Best overlap of pair ``index`` when one side also takes in a neighbouring verse."""
    pair = pairs[index]
    best = 0.0
    for other in (index - 1, index + 1):
        if 0 <= other < len(pairs) and pairs[other].book == pair.book:
            neighbour = pairs[other]
            best = max(
                best,
                _jaccard(pair.source_strongs | neighbour.source_strongs, pair.target_strongs),
                _jaccard(pair.source_strongs, pair.target_strongs | neighbour.target_strongs),
            )
    return best


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def restore_drop_caps(verses: Sequence[Verse]) -> list[Verse]:
    """Undoes drop-cap typography: a chapter's opening word printed in capitals.

    Some modules (the RV1909) keep the printed convention of capitalizing the first word of
    each chapter ("EN el principio", "Y FUERON acabados", "Salmo de David. JEHOVA es mi
    pastor"). For a module where most chapters open that way, the first run of capitalized
    words in verse 1 that the next word does not continue in capitals takes the module's
    usual casing of each word (or lower case), capitalized at the start of a sentence. Other
    modules are returned unchanged.

    Args:
        verses: All verses of one module.

    Returns:
        The verses, with the opening words of chapters re-cased where needed.
    """
    openings = [v for v in verses if v.verse == 1 and v.text]
    with_drop_cap = sum(
        1 for v in openings if any(_is_capitals(w) for w in _WORD.findall(v.text)[:2])
    )
    if 2 * with_drop_cap <= len(openings):
        return list(verses)
    forms = Counter(w for v in verses for w in _WORD.findall(v.text) if not _is_capitals(w))
    restored: list[Verse] = []
    for verse in verses:
        if verse.verse == 1 and verse.text:
            text = _recase_drop_cap(verse.text, forms)
            verse = Verse(
                verse.book, verse.chapter, verse.verse, verse.last_verse, text, verse.strongs
            )
        restored.append(verse)
    return restored


def _is_capitals(word: str) -> bool:
    return len(word) >= 2 and word.isupper()


def _recase_drop_cap(text: str, forms: Counter[str]) -> str:
    words = list(_WORD.finditer(text))
    start = 0
    while start < len(words):
        if not _is_capitals(words[start].group()):
            start += 1
            continue
        end = start + 1  # the run: capitals separated by single spaces
        while (
            end < len(words)
            and _is_capitals(words[end].group())
            and text[words[end - 1].end() : words[end].start()] == " "
        ):
            end += 1
        if end < len(words) and _is_capitals(words[end].group()):
            start = end  # capitals go on (an inscription, an acrostic letter): not a drop cap
            continue
        while (  # a one-letter word before the run belongs to it ("Y A SUS discipulos")
            start > 0
            and len(words[start - 1].group()) == 1
            and words[start - 1].group().isupper()
            and text[words[start - 1].end() : words[start].start()] == " "
        ):
            start -= 1
        pieces: list[str] = []
        position = 0
        for match in words[start:end]:
            word = match.group()
            lower, title = word.lower(), word.capitalize()
            cased = title if forms[title] > forms[lower] else lower
            before = text[: match.start()].rstrip(" \u00a1\u00bf(\"'")
            if not before or before.endswith(_SENTENCE_END):
                cased = cased[0].upper() + cased[1:]
            pieces += [text[position : match.start()], cased]
            position = match.end()
        return "".join(pieces) + text[position:]
    return text


def resolve_sword_root(
    modules: Sequence[str],
    package_cache_dir: Path,
    sword_root: Path | None = None,
    system_root: Path = DEFAULT_SWORD_ROOT,
) -> Path:
    """Finds a SWORD root that holds all ``modules``, fetching Debian packages if needed.

    Order: an explicit ``sword_root``; the system root (``apt-get install``); a root unpacked
    earlier into ``package_cache_dir``; else ``apt-get download`` of the modules' packages
    (works without root once the package lists exist) and ``dpkg-deb -x`` into that cache.

    Args:
        modules: Module names, e.g. ``("engKJV2006eb", "spaRV1909eb")``.
        package_cache_dir: Where downloaded packages are kept and unpacked.
        sword_root: Use this root and nothing else.
        system_root: The root that ``apt-get install`` fills.

    Returns:
        A SWORD root directory with ``mods.d/`` entries for every module.

    Raises:
        SwordModuleNotFoundError: The modules are neither installed nor fetchable; the message
            names the packages to install.
    """
    if sword_root is not None:
        for module in modules:
            find_module(module, sword_root)
        return Path(sword_root)
    cached_root = Path(package_cache_dir) / "root" / "usr" / "share" / "sword"
    for root in (system_root, cached_root):
        if _has_modules(root, modules):
            return root
    packages = sorted({_debian_package(module) for module in modules})
    error = _fetch_debian_packages(packages, Path(package_cache_dir))
    if _has_modules(cached_root, modules):
        return cached_root
    raise SwordModuleNotFoundError(
        f"SWORD modules {', '.join(modules)} are not installed under {system_root} and could "
        f"not be fetched into {package_cache_dir} ({error or 'the packages lack them'}); "
        f"install them with 'apt-get update && apt-get install {' '.join(packages)}' (as root)"
    )


def _has_modules(root: Path, modules: Sequence[str]) -> bool:
    try:
        for module in modules:
            find_module(module, root)
    except SwordModuleNotFoundError:
        return False
    return True


def _debian_package(module: str) -> str:
    package = DEBIAN_PACKAGES.get(module)
    if package is None:
        raise SwordModuleNotFoundError(
            f"no known Debian package provides SWORD module '{module}'; known modules: "
            f"{', '.join(sorted(DEBIAN_PACKAGES))}; pass sword_root= to use another library"
        )
    return package


def _fetch_debian_packages(packages: Sequence[str], cache_dir: Path) -> str:
    """Downloads and unpacks ``packages`` under ``cache_dir``; returns an error or ``""``."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "apt-get or dpkg-deb is not available"
    download_dir = cache_dir / "debs"
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["apt-get", "download", *packages],
            cwd=download_dir,
            check=True,
            capture_output=True,
            text=True,
        )
        for package in packages:
            debs = sorted(download_dir.glob(f"{package}_*.deb"))
            if not debs:
                return f"apt-get download left no {package}_*.deb in {download_dir}"
            subprocess.run(
                ["dpkg-deb", "-x", str(debs[-1]), str(cache_dir / "root")],
                check=True,
                capture_output=True,
                text=True,
            )
    except subprocess.CalledProcessError as exc:
        return f"'{' '.join(exc.cmd)}' failed: {exc.stderr.strip()}"
    return ""


def prepare_bible_pair(
    src_module: str,
    tgt_module: str,
    out_dir: Path,
    sword_root: Path | None = None,
    package_cache_dir: Path | None = None,
) -> dict[str, Path]:
    """Writes a verse-aligned translation corpus of two modules, split by books.

    Files in ``out_dir``: ``{train,dev,test}.tsv`` (source TAB target, one segment per line),
    ``{train,dev,test}.refs`` (the OSIS reference of each line) and ``meta.json`` (counts,
    module versions). Segments that one side lacks, and evidently misaligned ones (see
    :func:`find_misaligned`), are left out. A finished ``out_dir`` for the same modules is
    reused as is.

    Args:
        src_module: Source module, e.g. ``"engKJV2006eb"``.
        tgt_module: Target module, e.g. ``"spaRV1909eb"``.
        out_dir: Output directory, created if needed.
        sword_root: SWORD root to read; by default see :func:`resolve_sword_root`.
        package_cache_dir: Where Debian packages are fetched if the modules are not
            installed; defaults to ``out_dir/../debian``.

    Returns:
        Paths by name: ``"train"``, ``"dev"``, ``"test"`` (TSV files), ``"train_refs"``, ...,
        and ``"meta"``.
    """
    out_dir = Path(out_dir)
    paths = {split: out_dir / f"{split}.tsv" for split in SPLITS}
    paths |= {f"{split}_refs": out_dir / f"{split}.refs" for split in SPLITS}
    paths["meta"] = out_dir / "meta.json"
    request = {"kind": "pair", "source": src_module, "target": tgt_module}
    if _is_prepared(paths, request):
        return paths

    cache = Path(package_cache_dir) if package_cache_dir else out_dir.parent / "debian"
    root = resolve_sword_root((src_module, tgt_module), cache, sword_root)
    pairs = align_verses(
        restore_drop_caps(read_verses(src_module, root)),
        restore_drop_caps(read_verses(tgt_module, root)),
    )
    misaligned = find_misaligned(pairs)
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    refs: dict[str, list[str]] = {split: [] for split in SPLITS}
    words = {split: [0, 0] for split in SPLITS}
    num_empty = 0
    for index, pair in enumerate(pairs):
        if not pair.source or not pair.target:
            num_empty += 1
            continue
        if index in misaligned:
            continue
        split = split_of_book(pair.book)
        lines[split].append(f"{_one_line(pair.source)}\t{_one_line(pair.target)}")
        refs[split].append(pair.ref)
        words[split][0] += len(pair.source.split())
        words[split][1] += len(pair.target.split())

    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _write_lines(paths[split], lines[split])
        _write_lines(paths[f"{split}_refs"], refs[split])
    meta = request | {
        "format_version": FORMAT_VERSION,
        "modules": {
            "source": _module_meta(find_module(src_module, root)),
            "target": _module_meta(find_module(tgt_module, root)),
        },
        "splits": {
            split: {"pairs": len(lines[split]), "source_words": w[0], "target_words": w[1]}
            for split, w in words.items()
        },
        "dropped": {"one_side_empty": num_empty, "misaligned": len(misaligned)},
        "dev_books": list(DEV_BOOKS),
        "test_books": list(TEST_BOOKS),
    }
    _write_lines(paths["meta"], [json.dumps(meta, indent=2, ensure_ascii=False)])
    return paths


def prepare_bible_monolingual(
    module: str,
    out_dir: Path,
    sword_root: Path | None = None,
    package_cache_dir: Path | None = None,
) -> dict[str, Path]:
    """Writes one module's text, one verse (or linked range) per line, split by books.

    Files in ``out_dir``: ``{train,dev,test}.txt``, ``{train,dev,test}.refs`` and
    ``meta.json``, with the same books per split as :func:`prepare_bible_pair`. Empty verses
    are left out. A finished ``out_dir`` for the same module is reused as is.

    Args:
        module: Module name, e.g. ``"spaRV1909eb"``.
        out_dir: Output directory, created if needed.
        sword_root: SWORD root to read; by default see :func:`resolve_sword_root`.
        package_cache_dir: Where Debian packages are fetched if the module is not installed;
            defaults to ``out_dir/../debian``.

    Returns:
        Paths by name: ``"train"``, ``"dev"``, ``"test"`` (text files), ``"train_refs"``, ...,
        and ``"meta"``.
    """
    out_dir = Path(out_dir)
    paths = {split: out_dir / f"{split}.txt" for split in SPLITS}
    paths |= {f"{split}_refs": out_dir / f"{split}.refs" for split in SPLITS}
    paths["meta"] = out_dir / "meta.json"
    request = {"kind": "monolingual", "module": module}
    if _is_prepared(paths, request):
        return paths

    cache = Path(package_cache_dir) if package_cache_dir else out_dir.parent / "debian"
    root = resolve_sword_root((module,), cache, sword_root)
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    refs: dict[str, list[str]] = {split: [] for split in SPLITS}
    for verse in restore_drop_caps(read_verses(module, root)):
        if verse.text:
            split = split_of_book(verse.book)
            lines[split].append(_one_line(verse.text))
            pair = VersePair(verse.book, verse.chapter, verse.verse, verse.last_verse, "", "")
            refs[split].append(pair.ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _write_lines(paths[split], lines[split])
        _write_lines(paths[f"{split}_refs"], refs[split])
    meta = request | {
        "format_version": FORMAT_VERSION,
        "modules": {"module": _module_meta(find_module(module, root))},
        "splits": {
            split: {"lines": len(lines[split]), "words": sum(len(s.split()) for s in lines[split])}
            for split in SPLITS
        },
        "dev_books": list(DEV_BOOKS),
        "test_books": list(TEST_BOOKS),
    }
    _write_lines(paths["meta"], [json.dumps(meta, indent=2, ensure_ascii=False)])
    return paths


def prepare_bible_en_es(out_dir: Path) -> dict[str, Path]:
    """Prepares ``bible_en_es``, KJV (engKJV2006eb) -> Reina-Valera 1909 (spaRV1909eb).

    Has the signature of a corpus preparer in ``seqlab.data.corpora.catalog``.

    Args:
        out_dir: Output directory; Debian packages, if needed, go to ``out_dir/../debian``.

    Returns:
        The paths of :func:`prepare_bible_pair`.
    """
    return prepare_bible_pair("engKJV2006eb", "spaRV1909eb", out_dir)


def _is_prepared(paths: dict[str, Path], request: dict[str, str]) -> bool:
    """Whether every output exists and ``meta.json`` records the same request and format."""
    if not all(path.is_file() for path in paths.values()):
        return False
    try:
        meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("format_version") != FORMAT_VERSION:
        return False
    return all(meta.get(key) == value for key, value in request.items())


def _module_meta(info: ModuleInfo) -> dict[str, str]:
    return {
        "name": info.name,
        "version": info.version,
        "language": info.language,
        "description": info.description,
        "versification": info.versification,
        "debian_package": DEBIAN_PACKAGES.get(info.name, ""),
    }


def _one_line(text: str) -> str:
    """``text`` without tabs or line breaks (the reader already collapses whitespace)."""
    return " ".join(text.split())


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """Writes ``lines`` to ``path`` atomically: a temporary file renamed into place."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.writelines(line + "\n" for line in lines)
        os.chmod(temp_name, 0o644)  # mkstemp makes files private; the corpus is not
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
