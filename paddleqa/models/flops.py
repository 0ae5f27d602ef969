"""FLOPs of one window through each model family, counted from the shapes."""
from __future__ import annotations

def flops_per_query(config, seq_len: int, *, layers_only: bool = False) -> int:
    """Multiply-add FLOPs (2 per MAC) of one window of ``seq_len`` tokens through a QA model.

    Counted by hand from the shapes (embedding lookups and norms are negligible): Paddle's
    ``paddle.flops`` does not count the attention matmuls of a custom layer. Works for ERNIE
    configs (uniform layers), compact configs (per-layer heads/FFN) and the mobile student.
    ``layers_only`` counts the transformer layers alone.
    """
    if getattr(config, "model_type", "") == "mobile_qa" and not layers_only:
        pass

        return mobile_flops(config, seq_len)
    H, L = config.hidden_size, seq_len
    n_layers = len(getattr(config, "layer_heads", None) or []) or config.num_hidden_layers
    heads = getattr(config, "layer_heads", None) or [config.num_attention_heads] * n_layers
    ffn = getattr(config, "layer_ffn", None) or [config.intermediate_size] * n_layers
    d = getattr(config, "head_dim", 0) or H // config.num_attention_heads
    macs = 0
    for h, f in zip(heads, ffn):
        inner = h * d
        macs += 3 * L * H * inner      # q, k, v projections
        macs += 2 * L * L * inner      # scores and weighted values
        macs += L * inner * H          # output projection
        macs += 2 * L * H * f          # FFN
    if not layers_only:
        macs += L * H * 2              # span head
    return int(2 * macs)


def mobile_flops(config, seq_len: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one window: conv blocks + transformer layers + head."""
    pass

    L, H = seq_len, config.hidden_size
    # per-block inner widths: channel pruning narrows each block on its own
    inners = getattr(config, "block_channels", None) or [H * config.expand_ratio] * config.conv_blocks
    macs = sum(L * H * inner + L * inner * config.kernel_size + L * inner * H for inner in inners)
    if getattr(config, "embedding_size", 0) and config.embedding_size != H:
        macs += L * config.embedding_size * H  # the embedding projection
    return int(2 * macs) + flops_per_query(config, seq_len, layers_only=True) + 2 * L * H * 2
