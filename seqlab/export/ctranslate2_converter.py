"""TransformerMT -> a CTranslate2 model directory, built from numpy weights.

CTranslate2 (``pip install 'seqlab[ctranslate2]'``) is a fast CPU inference engine for
Transformers. The conversion maps seqlab's conventions onto its ``TransformerSpec``:

- pre-LN (``norm_first``) or post-LN layers, and the stack's final LayerNorm;
- one embedding matrix for the source, the target and the output projection (no bias);
- embeddings scaled by sqrt(D) (``scale_by_sqrt_dim``) plus absolute positions, copied as a
  table (so the sinusoid layout cannot differ);
- self-attention's query and key/value projections fused as [q; k; v], cross-attention's
  key/value projection as [k; v], as seqlab already stores it;
- the SentencePiece pieces as the vocabulary: pad 0, unk 1, bos 2 (the decoder's start
  token), eos 3. The source must end in ``</s>``, as seqlab appends EOS to every source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, UNK_ID, SentencePieceTokenizer
from seqlab.export.artifact import ArtifactError
from seqlab.models.mt.transformer_model import TransformerMT


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy().copy()


def _check_convertible(task: TransformerMT) -> None:
    """Raises ArtifactError naming the first setting CTranslate2's Transformer cannot express."""
    c = task.config
    problems = []
    if c.positions is None:
        problems.append("task.positions is None (relative positions only)")
    for stack in ("encoder", "decoder"):
        layer = getattr(c, stack).layer
        if layer.self_attention.relative_positions is not None:
            problems.append(f"task.{stack}.layer.self_attention.relative_positions is set")
        if getattr(task, stack).final_norm is not None and not layer.norm_first:
            problems.append(f"task.{stack} is post-LN with a final LayerNorm")
    if (task.encoder.final_norm is None) != (task.decoder.final_norm is None):
        problems.append("only one of the encoder and decoder has a final LayerNorm")
    if c.start_id != BOS_ID:
        problems.append(f"task.start_id is {c.start_id}, not BOS")
    if c.encoder.layer.norm_first != c.decoder.layer.norm_first:
        problems.append("encoder and decoder differ in norm_first")
    heads = {c.encoder.layer.self_attention.num_heads, c.decoder.layer.self_attention.num_heads}
    if len(heads) > 1:
        problems.append("encoder and decoder differ in num_heads")
    if problems:
        raise ArtifactError("cannot convert to CTranslate2: " + "; ".join(problems))


def transformer_spec(task: TransformerMT, pieces: list[str]) -> Any:
    """The ``ctranslate2.specs.TransformerSpec`` of ``task`` with its weights and vocabulary."""
    from ctranslate2.specs import common_spec
    from ctranslate2.specs import transformer_spec as ct2

    _check_convertible(task)
    c = task.config
    layer_config = c.encoder.layer
    activation = {
        "relu": common_spec.Activation.RELU,
        "gelu": common_spec.Activation.GELU,
    }[layer_config.ffn.activation]
    spec = ct2.TransformerSpec.from_config(
        (c.encoder.num_layers, c.decoder.num_layers),
        layer_config.self_attention.num_heads,
        pre_norm=layer_config.norm_first,
        no_final_norm=task.encoder.final_norm is None,
        activation=activation,
    )
    spec.config.layer_norm_epsilon = layer_config.layer_norm_epsilon
    spec.config.unk_token = pieces[UNK_ID]
    spec.config.bos_token = pieces[BOS_ID]
    spec.config.eos_token = pieces[EOS_ID]
    spec.config.decoder_start_token = pieces[BOS_ID]

    embedding = _numpy(task.embedding.weight)
    positions = _numpy(task.positions(c.positions.max_length, 0))
    for side_spec in (spec.encoder, spec.decoder):
        embeddings = side_spec.embeddings
        (embeddings[0] if isinstance(embeddings, list) else embeddings).weight = embedding
        side_spec.scale_embeddings = c.embedding.scale_by_sqrt_dim
        side_spec.position_encodings.encodings = positions
        stack = task.encoder if side_spec is spec.encoder else task.decoder
        if stack.final_norm is not None:
            _set_layer_norm(side_spec.layer_norm, stack.final_norm)
    spec.decoder.projection.weight = embedding

    for layer_spec, layer in zip(spec.encoder.layer, task.encoder.layers, strict=True):
        _set_self_attention(layer_spec.self_attention, layer.self_attention)
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attention_norm)
        _set_ffn(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, task.decoder.layers, strict=True):
        _set_self_attention(layer_spec.self_attention, layer.self_attention)
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attention_norm)
        attention = layer.cross_attention
        _set_linear(layer_spec.attention.linear[0], attention.query_proj)
        _set_linear(layer_spec.attention.linear[1], attention.key_value_proj)
        _set_linear(layer_spec.attention.linear[2], attention.output_proj)
        _set_layer_norm(layer_spec.attention.layer_norm, layer.cross_attention_norm)
        _set_ffn(layer_spec.ffn, layer)

    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    return spec


def _set_linear(spec: Any, linear: torch.nn.Module) -> None:
    spec.weight = _numpy(linear.weight)
    if linear.bias is not None:
        spec.bias = _numpy(linear.bias)


def _set_layer_norm(spec: Any, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _numpy(norm.weight)
    spec.beta = _numpy(norm.bias)


def _set_self_attention(spec: Any, attention: torch.nn.Module) -> None:
    """Fuses the query and key/value projections into CTranslate2's [q; k; v] projection."""
    query, key_value = attention.query_proj, attention.key_value_proj
    spec.linear[0].weight = _numpy(torch.cat([query.weight, key_value.weight]))
    if query.bias is not None:
        spec.linear[0].bias = _numpy(torch.cat([query.bias, key_value.bias]))
    _set_linear(spec.linear[1], attention.output_proj)


def _set_ffn(spec: Any, layer: torch.nn.Module) -> None:
    _set_layer_norm(spec.layer_norm, layer.ffn_norm)
    _set_linear(spec.linear_0, layer.ffn.input_proj)
    _set_linear(spec.linear_1, layer.ffn.output_proj)


def convert_to_ctranslate2(
    task: TransformerMT, tokenizer: SentencePieceTokenizer, out_dir: Path, quantize: str
) -> dict[str, Any]:
    """Writes the CTranslate2 model of ``task`` into ``out_dir`` (created).

    Args:
      quantize: "none" (float32 weights) or "int8" (int8 weights, CTranslate2's own scheme).

    Returns:
      The manifest entry: the model directory and its weight type.
    """
    try:
        from ctranslate2.converters.converter import Converter
    except ImportError as e:
        raise ArtifactError(
            "--format ctranslate2 needs the ctranslate2 package: pip install 'seqlab[ctranslate2]'"
        ) from e

    processor = tokenizer.processor
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    spec = transformer_spec(task, pieces)

    class _SpecConverter(Converter):
        def _load(self) -> Any:
            return spec

    quantization = "int8" if quantize == "int8" else "float32"
    _SpecConverter().convert(str(out_dir), quantization=quantization)
    return {"model_dir": out_dir.name, "weights": quantization, "source_suffix": pieces[EOS_ID]}
