"""Reader for SWORD zText Bible modules (Debian's sword-text-* packages) without libsword.

A module is described by a ``mods.d/*.conf`` file under a SWORD root directory; its
``DataPath=`` points at a directory holding, per testament (``ot``, ``nt``), three files:

- ``*.bzs``: one 12-byte little-endian record (offset, compressed size, uncompressed size)
  per zlib-compressed block of ``*.bzz``;
- ``*.bzv``: one 10-byte little-endian record (block u32, offset u32, size u16) per index slot;
- ``*.bzz``: the compressed blocks, concatenated.

Index slots follow the versification: slot 0 is empty, slot 1 is the testament heading, then
each book has a book-intro slot and each chapter a chapter-intro slot followed by one slot per
verse. A verse slot whose record equals the previous verse's (in the same chapter) is linked
into a range with it.
Entries are OSIS XML fragments; :func:`osis_to_text` turns one into plain text.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from seqlab.data.corpora.versification_kjv import KJV_BOOKS, BookVersification

DEFAULT_SWORD_ROOT = Path("/usr/share/sword")
"""Where Debian's sword-text-* packages install their modules."""

DEBIAN_PACKAGES: dict[str, str] = {
    "engKJV2006eb": "sword-text-kjv",
    "engWEB2015eb": "sword-text-web",
    "spaRV1909eb": "sword-text-sparv",
}
"""Debian package that provides each module the built-in corpora use."""

VERSIFICATIONS: dict[str, tuple[BookVersification, ...]] = {"KJV": KJV_BOOKS}
"""Versification systems this reader knows, by their ``Versification=`` name."""

PREPARE_COMMAND = "seqlab data prepare bible_en_es"
"""The command that fetches the modules into the data cache and prepares the corpus."""

_BLOCK_RECORD = struct.Struct("<III")
_SLOT_RECORD = struct.Struct("<IIH")
_TESTAMENTS = ("ot", "nt")

# Elements whose tags vanish without a space: they wrap words or parts of words.
_INLINE_ELEMENTS = frozenset(
    {"w", "transChange", "divineName", "foreign", "seg", "q", "hi", "name", "rdg", "abbr"}
)
_TAG = re.compile(r"<(/?)([A-Za-z][\w.:-]*)([^>]*?)(/?)>", re.DOTALL)
_INLINE_NAMES = "|".join(sorted(_INLINE_ELEMENTS))
_INLINE_TAG = re.compile(rf"</?(?:{_INLINE_NAMES})\b[^>]*>")
# A closing tag right before an opening inline tag: "</w><transChange>" glues two phrases.
_ABUTTING_INLINE = re.compile(rf"(</[^<>]*>)(?=<(?:{_INLINE_NAMES})\b(?:[^>]*[^/>])?>)")
_W_LEMMA = re.compile(r'<w\b[^>]*?\blemma="([^"]*)"')
_STRONGS = re.compile(r"\b([HG])0*(\d+)")
_CANONICAL = re.compile(r'\bcanonical="true"')
# Leftover USFM character markers in some modules' text, e.g. "the \nd LORD\+nd*".
_USFM_MARKER = re.compile(r"\\\+?[a-z]+[0-9]*\*? ?")
_PILCROW = "\u00b6"  # KJV paragraph marks at verse starts: layout, not words.
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r" +(?=[,.;:!?)\]])")


class SwordModuleNotFoundError(FileNotFoundError):
    """A SWORD module that is not installed under the given root; the message says how to fix."""

    def __str__(self) -> str:
        return str(self.args[0])


class SwordFormatError(ValueError):
    """A module whose files or configuration this reader cannot read."""


@dataclass(frozen=True)
class ModuleInfo:
    """What a module's ``mods.d/*.conf`` file says about it."""

    name: str
    """Module name, the ``[section]`` of its conf file, e.g. ``"engKJV2006eb"``."""
    conf_path: Path
    """The conf file that describes the module."""
    data_dir: Path
    """Absolute directory with the module's ``ot.*`` and ``nt.*`` files."""
    driver: str
    """``ModDrv=``; only ``zText`` is read here."""
    source_type: str
    """``SourceType=`` markup; only ``OSIS`` is read here."""
    encoding: str
    """``Encoding=`` of the entries (``UTF-8``, else SWORD's default ``Latin-1``)."""
    versification: str
    """``Versification=`` system (SWORD defaults to ``KJV``)."""
    version: str
    """``Version=`` of the module text, e.g. ``"14.3"``."""
    language: str
    """``Lang=`` code, e.g. ``"en"``."""
    description: str
    """``Description=``, e.g. ``"King James Version"``."""


@dataclass(frozen=True)
class Verse:
    """One verse, or a range of verses that the module stores as one linked entry."""

    book: str
    """OSIS book name, e.g. ``"Gen"``."""
    chapter: int
    """Chapter number, from 1."""
    verse: int
    """First verse of the entry, from 1."""
    last_verse: int
    """Last verse of the entry; equals ``verse`` unless verses are linked into a range."""
    text: str
    """Plain text: no tags, notes or non-canonical titles; single spaces; may be empty."""
    strongs: frozenset[str] = frozenset()
    """Strong's numbers tagged on the words (``"H430"``, ``"G2316"``); empty if untagged."""


def parse_conf(path: Path) -> dict[str, dict[str, str]]:
    """Parses a SWORD conf file into ``{section: {key: value}}``.

    Repeated keys keep their last value; continuation lines (ending in a backslash) are joined.

    Args:
        path: A ``mods.d/*.conf`` file.

    Returns:
        The key-value pairs of each ``[section]``.
    """
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    key = ""
    continued = False
    for raw_line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw_line.rstrip()
        if continued and current is not None:
            continued = line.endswith("\\")
            current[key] += "\n" + line.rstrip("\\")
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip(), {})
            continue
        if current is None or "=" not in stripped:
            continue
        key, value = (part.strip() for part in stripped.split("=", 1))
        continued = value.endswith("\\")
        current[key] = value.rstrip("\\")
    return sections


def missing_module_message(module: str, sword_root: Path) -> str:
    """Says that ``module`` is not under ``sword_root`` and how to install it."""
    package = DEBIAN_PACKAGES.get(module)
    install = (
        f"it is in the Debian package {package}: install it with 'apt-get install {package}' "
        f"(as root)"
        if package
        else "install the SWORD module that provides it"
    )
    return (
        f"SWORD module '{module}' not found: no conf file under {sword_root / 'mods.d'} has a "
        f"[{module}] section; {install}, or run '{PREPARE_COMMAND}', which fetches the "
        f"packages into the data cache with 'apt-get download' when it cannot install them"
    )


def find_module(module: str, sword_root: Path = DEFAULT_SWORD_ROOT) -> ModuleInfo:
    """Finds ``module`` by the ``[name]`` of a conf file in ``sword_root/mods.d``.

    Args:
        module: Module name, e.g. ``"engKJV2006eb"``.
        sword_root: SWORD library root holding ``mods.d/`` and ``modules/``.

    Returns:
        The module's description, with an absolute data directory.

    Raises:
        SwordModuleNotFoundError: No conf file names the module, or its data directory is missing.
        SwordFormatError: The module is not an OSIS zText module.
    """
    sword_root = Path(sword_root)
    mods_dir = sword_root / "mods.d"
    conf_paths = sorted(mods_dir.glob("*.conf")) if mods_dir.is_dir() else []
    for conf_path in conf_paths:
        for name, fields in parse_conf(conf_path).items():
            if name.lower() == module.lower():
                return _module_info(name, conf_path, fields, sword_root)
    raise SwordModuleNotFoundError(missing_module_message(module, sword_root))


def _module_info(
    name: str, conf_path: Path, fields: dict[str, str], sword_root: Path
) -> ModuleInfo:
    data_path = fields.get("DataPath", "")
    if not data_path:
        raise SwordFormatError(f"{conf_path}: [{name}] has no DataPath=")
    data_dir = (sword_root / data_path).resolve()
    info = ModuleInfo(
        name=name,
        conf_path=conf_path,
        data_dir=data_dir,
        driver=fields.get("ModDrv", ""),
        source_type=fields.get("SourceType", "Plaintext"),
        encoding=fields.get("Encoding", "Latin-1"),
        versification=fields.get("Versification", "KJV"),
        version=fields.get("Version", ""),
        language=fields.get("Lang", ""),
        description=fields.get("Description", ""),
    )
    if info.driver.lower() != "ztext":
        raise SwordFormatError(f"{conf_path}: ModDrv={info.driver}; only zText modules are read")
    if info.source_type.upper() != "OSIS":
        raise SwordFormatError(
            f"{conf_path}: SourceType={info.source_type}; only OSIS modules are read"
        )
    compress = fields.get("CompressType", "ZIP")
    if compress.upper() != "ZIP":
        raise SwordFormatError(f"{conf_path}: CompressType={compress}; only ZIP (zlib) is read")
    if not data_dir.is_dir():
        package = DEBIAN_PACKAGES.get(name, "the package that provides it")
        raise SwordModuleNotFoundError(
            f"SWORD module '{name}': {conf_path} points to {data_dir}, which does not exist; "
            f"reinstall {package} or run '{PREPARE_COMMAND}'"
        )
    return info


class ZTextTestament:
    """The entries of one testament of a zText module, with decompressed blocks cached."""

    def __init__(self, data_dir: Path, testament: str) -> None:
        """Reads the index files of ``testament`` (``"ot"`` or ``"nt"``) in ``data_dir``.

        Raises:
            SwordModuleNotFoundError: One of the three files is missing.
            SwordFormatError: An index file is not a whole number of records.
        """
        paths = {ext: data_dir / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")}
        for path in paths.values():
            if not path.is_file():
                raise SwordModuleNotFoundError(f"zText file {path} is missing")
        self._blocks = _read_records(paths["bzs"], _BLOCK_RECORD)
        self._slots = _read_records(paths["bzv"], _SLOT_RECORD)
        self._compressed = paths["bzz"].read_bytes()
        self._cache: dict[int, bytes] = {}

    @property
    def num_slots(self) -> int:
        """Number of index slots (intros and verses)."""
        return len(self._slots)

    def slot_record(self, slot: int) -> tuple[int, ...]:
        """The (block, offset, size) record of ``slot``; equal records mean linked verses."""
        return self._slots[slot]

    def entry(self, slot: int) -> bytes:
        """The raw bytes stored for ``slot`` (empty for an empty slot)."""
        block, offset, size = self._slots[slot]
        if size == 0:
            return b""
        return self._block(block)[offset : offset + size]

    def _block(self, block: int) -> bytes:
        data = self._cache.get(block)
        if data is None:
            start, compressed_size, size = self._blocks[block]
            data = zlib.decompress(self._compressed[start : start + compressed_size])
            if len(data) != size:
                raise SwordFormatError(
                    f"zText block {block} decompresses to {len(data)} bytes, index says {size}"
                )
            self._cache[block] = data
        return data


def _read_records(path: Path, record: struct.Struct) -> list[tuple[int, ...]]:
    data = path.read_bytes()
    if len(data) % record.size:
        raise SwordFormatError(
            f"{path} has {len(data)} bytes, not a whole number of {record.size}-byte records"
        )
    return list(record.iter_unpack(data))


def osis_to_text(osis: str) -> tuple[str, frozenset[str]]:
    """Turns one OSIS entry into plain text and the Strong's numbers of its words.

    Notes and non-canonical titles (section headings, acrostic letters) go with their content;
    canonical titles (psalm superscriptions) keep their words. Tags that wrap words vanish
    (with a space where two such elements abut, which some modules use between phrases),
    others become a space. Entities are unescaped; leftover USFM markers (``\\nd``) and
    paragraph marks go; whitespace collapses to single spaces.

    Args:
        osis: An OSIS XML fragment as stored for one verse.

    Returns:
        The text and the set of Strong's numbers (e.g. ``"H430"``) on its words.
    """
    if "<note" in osis or "<title" in osis:
        osis = _drop_elements(osis)
    lemmas = " ".join(_W_LEMMA.findall(osis))
    strongs = frozenset(letter + number for letter, number in _STRONGS.findall(lemmas))
    text = _ABUTTING_INLINE.sub(r"\1 ", osis)
    text = _INLINE_TAG.sub("", text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _USFM_MARKER.sub("", text).replace(_PILCROW, " ")
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub("", text), strongs


def _drop_elements(osis: str) -> str:
    """``osis`` without notes and non-canonical titles, nested or not, and their content."""
    kept: list[str] = []
    dropping: list[str] = []  # names of the open elements being dropped
    position = 0
    for match in _TAG.finditer(osis):
        if not dropping:
            kept.append(osis[position : match.start()])
        position = match.end()
        closing, name, attributes, self_closing = match.groups()
        if dropping:
            if closing and name == dropping[-1]:
                dropping.pop()
            elif not closing and not self_closing and name in ("note", "title"):
                dropping.append(name)
        elif not closing and not self_closing and _is_dropped(name, attributes):
            dropping.append(name)
        else:
            kept.append(match.group())
    if not dropping:
        kept.append(osis[position:])
    return "".join(kept)


def _is_dropped(name: str, attributes: str) -> bool:
    if name == "note":
        return True
    return name == "title" and not _CANONICAL.search(attributes)


def read_verses(module: str, sword_root: Path = DEFAULT_SWORD_ROOT) -> list[Verse]:
    """Reads every verse of a zText module in canonical order.

    Verses linked into a range come out once, as the first verse with ``last_verse`` set.
    Verses the module leaves empty come out with empty text, so that both sides of a
    translation pair list the same references.

    Args:
        module: Module name, e.g. ``"engKJV2006eb"``.
        sword_root: SWORD library root holding ``mods.d/`` and ``modules/``.

    Returns:
        The verses, book by book in the order of the module's versification.

    Raises:
        SwordModuleNotFoundError: The module is not installed under ``sword_root``.
        SwordFormatError: The module's versification is unknown or its index does not match it.
    """
    info = find_module(module, sword_root)
    books = VERSIFICATIONS.get(info.versification)
    if books is None:
        raise SwordFormatError(
            f"module '{info.name}' uses the {info.versification} versification; "
            f"known: {', '.join(sorted(VERSIFICATIONS))}"
        )
    encoding = "utf-8" if info.encoding.replace("-", "").upper() == "UTF8" else "latin-1"
    verses: list[Verse] = []
    for testament in _TESTAMENTS:
        testament_books = [book for book in books if book.testament == testament]
        reader = ZTextTestament(info.data_dir, testament)
        expected_slots = 2 + sum(
            1 + len(b.verse_counts) + sum(b.verse_counts) for b in testament_books
        )
        if reader.num_slots != expected_slots:
            raise SwordFormatError(
                f"module '{info.name}' {testament} index has {reader.num_slots} slots; the "
                f"{info.versification} versification needs {expected_slots}"
            )
        verses.extend(_read_testament(reader, testament_books, encoding))
    return verses


def _read_testament(
    reader: ZTextTestament, books: list[BookVersification], encoding: str
) -> list[Verse]:
    verses: list[Verse] = []
    slot = 1  # slot 0 is empty, slot 1 the testament heading
    for book in books:
        slot += 1  # book intro
        for chapter, num_verses in enumerate(book.verse_counts, start=1):
            slot += 1  # chapter intro
            previous_record: tuple[int, ...] | None = None
            for verse in range(1, num_verses + 1):
                record = reader.slot_record(slot + verse)
                if record == previous_record and record[2] > 0:
                    # A linked verse shares its entry with the range's first verse.
                    first = verses[-1]
                    verses[-1] = Verse(
                        first.book, chapter, first.verse, verse, first.text, first.strongs
                    )
                else:
                    raw = reader.entry(slot + verse).decode(encoding, errors="replace")
                    text, strongs = osis_to_text(raw)
                    verses.append(Verse(book.osis_name, chapter, verse, verse, text, strongs))
                previous_record = record
            slot += num_verses
    return verses
