"""Fine-tune a teacher QA model on SQuAD/CMRC data with PaddleNLP's Trainer.

The teacher stage: a pretrained model (``model``, a folder or hub name) or one built from
scratch (``arch``), trained on the run's training file through the loop every training stage
shares (:func:`paddleqa.stages.training.train`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from ..core.config import opt
from ..core.errors import ConfigError
from ..models.build import ArchConfig, build_from_scratch, load_model, widen_token_types
from ..models.tables import table_file
from ..text.features import FeatureParams, token_types_needed
from ..text.tokenizer import load_tokenizer
from .training import Recipe, TrainSettings, provenance, start_embeddings, train

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneConfig(TrainSettings):
    """Fine-tune (or train from scratch) an extractive QA model with PaddleNLP's Trainer."""

    model: str = opt("", help="pretrained model: hub name or folder; '' = from scratch (see arch)")
    tokenizer: str = opt("", help="tokenizer folder or hub name; default: the model's own")
    arch: ArchConfig = opt(factory=ArchConfig, help="architecture when training from scratch")
    max_seq_len: int = opt(384, help="tokens per window (question + context + 3 special)")
    doc_stride: int = opt(128, help="step in tokens between overlapping context windows")
    max_query_length: int = opt(64, help="question tokens kept")
    overlap_types: bool = opt(False, help="mark question/context tokens that occur in both with "
                              "token types 2/3 (an exact-match signal for from-scratch models)")
    word_marks: bool = opt(False, help="mark tokens inside a jieba word (not its first character) "
                           "by adding 4 to their token type (the model gets 8 token types)")
    entity_marks: bool = opt(False, help="add 8 x the Baidu LAC entity class (person, place, "
                             "organisation, time, number, other proper noun) to each token's type "
                             "(the model gets 56 token types)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model and not self.tokenizer:
            raise ValueError("a from-scratch model (model: '') needs a tokenizer: build one with "
                             "`paddleqa vocab build` and set tokenizer to its folder")
        self.feature_params()  # validates the window settings
        if self.max_seq_len > self.arch.max_position_embeddings and not self.model:
            raise ValueError(f"max_seq_len ({self.max_seq_len}) exceeds arch.max_position_embeddings "
                             f"({self.arch.max_position_embeddings})")

    def feature_params(self):
        return FeatureParams(self.max_seq_len, self.doc_stride, self.max_query_length,
                             self.overlap_types, self.word_marks, self.entity_marks)


def run(config: FinetuneConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> dict:
    """Train, save ``model/``, score the dev file; returns the metrics (also in metrics.json)."""

    tokenizer = load_tokenizer(config.tokenizer or config.model)
    params = config.feature_params()

    def build(data):
        if config.model:
            if config.arch.embeddings_from:
                log.info("arch.embeddings_from is for a model built from scratch; %s brings its "
                         "own embeddings", config.model)
            model = load_model(config.model)
        else:
            model = build_from_scratch(config.arch, vocab_size=len(tokenizer),
                                       pad_token_id=tokenizer.pad_token_id or 0)
            report = start_embeddings(model, config.arch.embeddings_from, config.arch.embeddings_std,
                                      tokenizer, data.train_feats["input_ids"], config.seed)
            if report:
                recipe.metrics["embeddings_from"] = report
                recipe.info["embeddings_from"] = provenance(report)
        wanted = token_types_needed(params)
        if wanted > 4:  # word/entity marks: the new types start as copies of types 0-3
            had = widen_token_types(model, wanted)
            if had < wanted:
                log.info("lexical marks: token types %d -> %d (the new ones start as copies)", had,
                         wanted)
        n_types = getattr(model.config, "type_vocab_size", 0)
        if params.overlap_types and n_types < 4:
            raise ConfigError(f"overlap_types needs a model with >= 4 token types; {config.model} "
                              f"has {n_types}. Set overlap_types: false for this model.")
        return model, model

    recipe = Recipe("finetune", tokenizer, params, build,
                    inputs={"model": config.model, "tokenizer": config.tokenizer,
                            **table_file(config.arch.embeddings_from)})
    return train(config, recipe, resume=resume, callbacks=callbacks)
