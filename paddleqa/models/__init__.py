"""Model families and what they share.

``build`` creates and loads models (PaddleNLP ERNIE, the compact pruned ERNIE, the conv
student) from a local folder or a hub name; ``compact`` and ``mobile`` are paddleqa's own
families; ``flops`` counts them, ``weights`` starts a small model from a big one, ``losses``
holds the distillation objectives and ``graph`` traces any of them into a static graph.

The input/output contract below is what every family's forward takes and returns, and so
what every exported graph, bundle and runtime uses.
"""

INPUT_NAMES = ("input_ids", "token_type_ids", "position_ids", "attention_mask")


INPUT_DTYPES = {"input_ids": "int64", "token_type_ids": "int64", "position_ids": "int64",
                "attention_mask": "float32"}


OUTPUT_NAMES = ("start_logits", "end_logits")
