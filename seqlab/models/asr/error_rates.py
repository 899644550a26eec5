"""Word and character error rates (jiwer) after the documented transcript normalization.

Both references and hypotheses go through
:func:`seqlab.data.transcripts.normalize_transcript` (lowercase, punctuation removed except
apostrophes inside words, single spaces) before scoring. Utterances whose normalized reference
is empty cannot be scored and are counted in ``num_unscored``.
"""

from __future__ import annotations

from seqlab.data.transcripts import normalize_transcript


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER in percent, with the word error counts.

    Returns:
      ``wer``, ``cer`` (percent), ``substitutions``, ``deletions``, ``insertions`` (words),
      ``num_words`` (reference words) and ``num_unscored``.
    """
    pairs = [
        (normalize_transcript(r), normalize_transcript(h))
        for r, h in zip(references, hypotheses, strict=True)
    ]
    scored = [(r, h) for r, h in pairs if r]
    out = {"num_unscored": float(len(pairs) - len(scored))}
    if not scored:
        return out | {"wer": float("nan"), "cer": float("nan"), "num_words": 0.0}
    refs, hyps = [r for r, _ in scored], [h for _, h in scored]
    import jiwer  # on use: machines that train text models need not have it

    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return out | {
        "wer": 100.0 * words.wer,
        "cer": 100.0 * chars.cer,
        "substitutions": float(words.substitutions),
        "deletions": float(words.deletions),
        "insertions": float(words.insertions),
        "num_words": float(sum(len(r.split()) for r in refs)),
    }
