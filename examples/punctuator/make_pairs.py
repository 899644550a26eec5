"""Makes punctuator training pairs from any text file: one sentence or paragraph a line.

    python examples/punctuator/make_pairs.py IN.txt OUT.tsv

Each output line is ``plain text TAB original text``: the input the model reads (lowercase,
no punctuation) and the sentence it should restore.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labels import plain_text  # labels.py sits next to this script

from seqlab.data.text_lines import read_text_lines


def main(source: str, target: str) -> None:
    lines = read_text_lines(source)  # names the file and line of any bad UTF-8
    lines = [" ".join(line.split()) for line in lines]  # no tabs inside a TSV field
    pairs = [(plain_text(line), line) for line in lines if plain_text(line)]
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{plain}\t{line}\n" for plain, line in pairs))
    print(f"{target}: {len(pairs)} pairs")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
