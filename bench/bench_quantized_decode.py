#!/usr/bin/env python
"""Test BLEU and decode speed of fp32, QAT int8 and PTQ int8 seqlab beside CTranslate2.

One run decodes the same sentences (the test split, in seqlab's eval batches) with:

- ``seqlab fp32``: the trained model of ``--logdir``, seqlab's beam search;
- ``seqlab PTQ int8``: the same model with dynamic int8 Linear layers (``seqlab.quant.ptq``);
- ``seqlab QAT int8``: the model of ``--qat-logdir`` (trained with ``--set quant.mode=qat``),
  its fake-quantized weights folded and then made int8 the same way (skipped without it);
- ``CTranslate2 fp32`` / ``int8``: the ``--logdir`` model converted as ``seqlab export
  --format ctranslate2`` does, with CTranslate2's own beam search and length penalty
  (``log P / |Y| ** alpha``, vs seqlab's GNMT ``((5 + |Y|) / 6) ** alpha``) and int8 weights
  quantized at load time.

Speed is sentences per second of the decode loop (tokenized sources in, detokenized text out,
scoring included), one engine at a time on ``--threads`` threads.

    python bench/bench_quantized_decode.py --logdir runs/bible_en_es.transformer_small \\
        --qat-logdir runs/bible_en_es.transformer_small_qat --output /tmp/quantized.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from seqlab.export.ctranslate2_converter import convert_to_ctranslate2
from seqlab.export.ctranslate2_runner import translate_ids
from seqlab.export.predictor import Predictor
from seqlab.train.decode_runner import decode_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--logdir", required=True, help="A trained TransformerMT run (fp32).")
    p.add_argument("--qat-logdir", default="", help="The same experiment trained with QAT.")
    p.add_argument("--dataset", default="test", help="Split to decode and score.")
    p.add_argument("--limit", type=int, default=0, help="Only the first N sentences (0 = all).")
    p.add_argument("--threads", type=int, default=1, help="Intra-op threads of every engine.")
    p.add_argument("--output", default="", help="Also write the rows as JSON here.")
    return p.parse_args(argv)


def timed_seqlab(name: str, predictor: Predictor, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    _, metrics = decode_dataset(predictor.context, args.dataset, args.limit, show_progress=False)
    seconds = time.perf_counter() - start
    return _row(name, metrics, seconds)


def timed_ctranslate2(
    name: str, predictor: Predictor, model_dir: Path, compute_type: str, args: argparse.Namespace
) -> dict[str, Any]:
    import ctranslate2

    task, data = predictor.context.task, predictor.context.data
    search_config = task.config.beam_search
    search = search_config.build()
    translator = ctranslate2.Translator(
        str(model_dir), device="cpu", compute_type=compute_type, intra_threads=args.threads
    )
    processor = data.tokenizer.processor
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    examples = data.examples(args.dataset)
    batches = data.eval_batches(examples)
    if args.limit > 0:
        batches = [b for b in ([i for i in b if i < args.limit] for b in batches) if b]
    hard_cap = task.config.positions.max_length - 1
    start = time.perf_counter()
    results = {}
    for indices in batches:
        sources = [examples.source_ids[i] for i in indices]
        max_lengths = search.max_lengths(torch.tensor([len(s) for s in sources]), hard_cap)
        outputs = translate_ids(
            translator,
            pieces,
            sources,
            max_lengths.tolist(),
            beam_size=search_config.beam_size,
            length_penalty=search_config.length_penalty_alpha,
        )
        for i, ids in zip(indices, outputs, strict=True):
            results[i] = {
                "hypothesis": data.tokenizer.decode(ids),
                "reference": examples.target_text[i],
            }
    metrics = task.decode_metrics([results[i] for i in sorted(results)])
    return _row(name, metrics, time.perf_counter() - start)


def _row(name: str, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    sentences = int(metrics["num_sentences"])
    return {
        "system": name,
        "bleu": metrics["bleu"],
        "chrf": metrics["chrf"],
        "sentences": sentences,
        "seconds": seconds,
        "sentences_per_second": sentences / seconds,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    fp32 = Predictor.from_logdir(Path(args.logdir))
    rows = [timed_seqlab("seqlab fp32", fp32, args)]
    if args.qat_logdir:
        qat = Predictor.from_logdir(Path(args.qat_logdir), quantize="int8")
        rows.append(timed_seqlab("seqlab QAT int8", qat, args))
    else:
        print("[bench] seqlab QAT int8 skipped: pass --qat-logdir (a run with quant.mode=qat)")
    # Quantized before packing (a packed copy has no nn.Linear left to quantize).
    ptq = Predictor.from_logdir(Path(args.logdir), quantize="int8")
    rows.append(timed_seqlab("seqlab PTQ int8", ptq, args))
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-ct2-") as tmp:
        model_dir = Path(tmp) / "model"
        convert_to_ctranslate2(fp32.context.task, fp32.context.data.tokenizer, model_dir, "none")
        for compute_type in ("float32", "int8"):
            name = f"CTranslate2 {'fp32' if compute_type == 'float32' else 'int8'}"
            rows.append(timed_ctranslate2(name, fp32, model_dir, compute_type, args))

    base = rows[0]["sentences_per_second"]
    print(
        f"\n{args.dataset} split of {args.logdir}, {rows[0]['sentences']} sentences, "
        f"{args.threads} thread(s), torch {torch.__version__}, {platform.processor() or ''}"
    )
    print("| system | BLEU | chrF | sentences/s | speed vs seqlab fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['system']} | {row['bleu']:.2f} | {row['chrf']:.2f} | "
            f"{row['sentences_per_second']:.1f} | {row['sentences_per_second'] / base:.2f}x |"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
