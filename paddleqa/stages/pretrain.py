"""Pre-train an encoder on unlabelled Chinese text: masked-LM or ELECTRA, whole-word masking.

Built from PaddleNLP pieces: ``ErnieForMaskedLM`` (``arch.kind: ernie``; for the conv +
attention hybrid, ``kind: mobilenet``, :class:`paddleqa.models.mobile.MobileQAForMaskedLM`) over
the encoder finetune would build from the same ``arch`` and tokenizer, PaddleNLP's ``Trainer``
(the schedule, checkpoints and resume every training stage shares, :mod:`.trainer`), and
``DataCollatorForWholeWordMask`` fed the ``chinese_ref`` of jieba words
(:mod:`paddleqa.text.corpus`), so all characters of a word are masked together. The corpus is
any list of text files, folders and SQuAD/CMRC JSON files; a file this run reports scores on is
refused (``exclude_files``).

``objective`` picks what is learnt (:data:`OBJECTIVES`): ``mlm`` predicts the masked tokens
(:mod:`.mlm`); ``electra`` (Clark et al. 2020) lets a small generator fill the same masks with
sampled tokens and trains the encoder to detect the replaced ones (:mod:`.electra`,
:mod:`paddleqa.models.electra`); ``model/`` then holds that discriminator, as the same kind of
folder.

Output: ``OUTPUT_DIR/model/`` is a plain pretrained folder (``config.json``,
``model_state.pdparams``, ``vocab.txt`` and the tokenizer files), which ``finetune.model: DIR``
loads exactly as it loads a hub model, plus ``metrics.json`` (corpus counts, the loss curve,
fixed-mask probes before and after -- for electra also the RTD loss and accuracy and the
replaced share --, params, wall time), ``loss_curve.json`` and the
manifest that lets safe loading check the weights. Also task-adaptive pre-training: point it at
a team's own knowledge-base text before fine-tuning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ..core.config import opt, to_dict
from ..core.distributed import file_lock, is_main
from ..core.errors import PaddleQAError
from ..core.io import write_json
from ..core.manifest import sha256_path, write_manifest
from ..core.settings import FeatureSettings, ScheduleSettings
from ..models.build import ArchConfig
from ..models.tables import table_file
from ..text.corpus import PACKING_VERSION, Corpus, Sequences, pack_sequences, read_corpus
from ..text.features import default_cache_dir
from ..text.tokenizer import load_tokenizer
from .training import start_embeddings, start_run

log = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.json"
PROBE_ROWS = 64


@dataclasses.dataclass
class PretrainConfig(ScheduleSettings, FeatureSettings):
    """Pre-training of a from-scratch encoder with whole-word masking (jieba): masked-LM or ELECTRA."""

    corpus: list[str] = opt(factory=list, help="text to pre-train on: UTF-8 .txt/.md files, folders "
                            "of them, SQuAD/CMRC 2018 or CMRC 2019 JSON files (their contexts)")
    exclude_files: list[str] = opt(factory=list, help="files whose contexts must never be "
                                   "pre-trained on (the sets a run reports); a corpus file that is "
                                   "one, or holds one of their contexts, is refused. The pipeline "
                                   "always adds its dev file")
    output_dir: str = opt("", help="run folder: model/ (the pretrained folder), checkpoints/, "
                          "metrics, manifest")
    tokenizer: str = opt("", help="tokenizer folder (vocab.txt): the pretrained folder gets this "
                         "vocabulary, and so does every model fine-tuned from it")
    arch: ArchConfig = opt(factory=ArchConfig, help="encoder architecture (as finetune.arch)")
    max_seq_len: int = opt(384, help="tokens per packed sequence, [CLS] and [SEP] included")
    mlm_probability: float = opt(0.15, help="share of each sequence's tokens masked, whole jieba "
                                 "words at a time")
    objective: str = opt("mlm", help="what the encoder learns: mlm (predict the masked tokens) or "
                         "electra (a small generator fills the masks, the encoder detects which "
                         "tokens were replaced; model/ holds the detector, the same kind of folder)")
    generator_size: float = opt(0.25, help="electra: the generator's width, FFN and heads as a "
                                "fraction of the encoder's (its layers are the encoder's)")
    rtd_weight: float = opt(50.0, help="electra: weight of the replaced-token-detection loss "
                            "against the generator's MLM loss (the paper's lambda)")
    # The schedule (core/settings.ScheduleSettings, as finetune's, so the Trainer's arguments come
    # from the one trainer.training_arguments); pre-training wants other defaults:
    epochs: float = opt(3.0, help="passes over the corpus (ignored when max_steps > 0)")
    batch_size: int = opt(32, help="sequences per optimizer step (per process)")
    learning_rate: float = opt(5e-4, help="peak learning rate (linear warm-up and decay)")
    warmup_ratio: float = opt(0.06, help="fraction of steps spent warming up")
    # cache_dir (the packed corpus is cached there too), progress: inherited (core/settings.py)

    def __post_init__(self) -> None:
        super().__post_init__()  # the schedule's checks
        if not self.corpus:
            raise ValueError("corpus: give at least one text file, folder or SQuAD/CMRC JSON file")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if not self.tokenizer:
            raise ValueError("tokenizer is required: a folder with vocab.txt (`paddleqa vocab build "
                             "DATA.json --out DIR`, or a pretrained model's folder)")
        if not 8 <= self.max_seq_len <= self.arch.max_position_embeddings:
            raise ValueError(f"max_seq_len must be in [8, arch.max_position_embeddings = "
                             f"{self.arch.max_position_embeddings}], got {self.max_seq_len}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is unknown; valid: {', '.join(OBJECTIVES)}")
        if not 0 < self.generator_size <= 1:
            raise ValueError(f"generator_size must be in (0, 1], got {self.generator_size}")
        if not self.rtd_weight > 0:
            raise ValueError(f"rtd_weight must be > 0, got {self.rtd_weight}")

    def inputs(self) -> dict[str, str]:
        """What decides the result besides the config: the corpus paths, the tokenizer and a
        table file the embeddings start from (a registered table is named in the config)."""
        return {**{f"corpus_{i}": p for i, p in enumerate(self.corpus)}, "tokenizer": self.tokenizer,
                **table_file(self.arch.embeddings_from)}


def _mlm():
    from . import mlm  # imports paddle and paddlenlp at load: deferred on purpose

    return mlm.MaskedLMObjective()


def _electra():
    from . import electra  # imports paddle at load: deferred on purpose

    return electra.ElectraObjective()


# objective name -> its pieces (built when training starts): the model, what model/ holds, its
# sizes, the batch collator over the shared whole-word masks, the fixed-row probe
OBJECTIVES = {"mlm": _mlm, "electra": _electra}


def run(config: PretrainConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> dict:
    """Pre-train, save ``model/``, write the records; returns the metrics (rank 0; {} elsewhere)."""
    import paddle  # deferred on purpose: the stages load without paddle

    from . import mlm, trainer as tr  # import paddle and paddlenlp at load: deferred on purpose

    started = time.time()
    out = Path(config.output_dir)
    corpus = read_corpus(config.corpus, exclude=config.exclude_files)  # a bad file stops it here
    if not Path(config.tokenizer).is_dir():
        raise PaddleQAError(f"tokenizer folder {config.tokenizer} does not exist: build it with "
                            "`paddleqa vocab build DATA.json --out DIR` (in a pipeline: "
                            "`paddleqa run CONFIG --only vocab`), or set pretrain.tokenizer")
    tokenizer = load_tokenizer(config.tokenizer)
    last_checkpoint = start_run(config, resume, config.inputs(), "pretrain")
    sequences, corpus_stats = _sequences(config, corpus, tokenizer)
    paddle.set_device(config.device)

    objective = OBJECTIVES[config.objective]()
    paddle.seed(config.seed)
    model = objective.build(config, len(tokenizer), tokenizer.pad_token_id or 0)
    table = start_embeddings(objective.saved(model), config.arch.embeddings_from,
                             config.arch.embeddings_std, tokenizer, sequences.ids, config.seed)
    sizes = objective.sizes(model)
    log.info("pre-training (%s) %s params on %d sequences of <= %d tokens", config.objective,
             f"{sizes['params']:,}", len(sequences), config.max_seq_len)
    dataset = mlm.SequenceDataset(sequences)
    collate = objective.collate(mlm.SeededWholeWordMask(tokenizer, config.mlm_probability, config.seed))
    before = objective.probe(model, dataset, collate, PROBE_ROWS, config.batch_size)
    trainer = mlm.MLMTrainer(model=model, args=tr.training_arguments(config), train_dataset=dataset,
                             data_collator=mlm.RowPacker(tokenizer.pad_token_id or 0), masker=collate,
                             tokenizer=tokenizer,
                             callbacks=[tr.StepSeed(config.seed), *callbacks])
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    train_seconds = time.time() - t_train
    replicas = tr.replica_fingerprints(model)  # every rank takes part (a collective)
    if not trainer.is_world_process_zero():
        return {}
    model_dir = out / "model"
    objective.saved(model).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    after = objective.probe(model, dataset, collate, PROBE_ROWS, config.batch_size)
    metrics = _metrics(config, trainer, result, train_seconds, last_checkpoint,
                       {**sizes, "corpus": corpus_stats}, {"objective": config.objective,
                       **objective.settings(config), "probe_sequences": min(PROBE_ROWS, len(dataset)),
                       **{f"{k}_before": v for k, v in before.items()},
                       **{f"{k}_after": v for k, v in after.items()}})
    if table:
        metrics["embeddings_from"] = table
    if replicas:
        metrics["replicas_identical"] = len(set(replicas)) == 1
    metrics["wall_seconds"] = round(time.time() - started, 1)
    write_manifest(out, "pretrain", to_dict(config), config.inputs(), {"model": model_dir}, metrics,
                   started=started)
    return metrics


def _metrics(config: PretrainConfig, trainer, result, train_seconds: float,
             last_checkpoint: str | None, head: dict[str, Any], probes: dict[str, Any]) -> dict:
    """metrics.json (less the wall time): sizes and corpus (``head``), the run, the probes; the
    loss curve is also written to ``loss_curve.json``."""
    from . import trainer as tr  # imports paddle and paddlenlp at load: deferred on purpose

    curve = [{"step": h["step"], "epoch": round(h.get("epoch", 0.0), 3), "loss": h["loss"],
              "learning_rate": h.get("learning_rate")} for h in trainer.state.log_history if "loss" in h]
    write_json(Path(config.output_dir) / LOSS_CURVE, curve)
    log.info("%s loss %s -> %s over %d steps; probe loss %.4f -> %.4f", config.objective,
             curve[0]["loss"] if curve else None, curve[-1]["loss"] if curve else None,
             trainer.state.global_step, probes["probe_loss_before"], probes["probe_loss_after"])
    return {**head, "max_seq_len": config.max_seq_len, "mlm_probability": config.mlm_probability,
            **tr.run_metrics(trainer.state, result, train_seconds, last_checkpoint, "sequences_per_second"),
            **probes, "loss_curve": curve}


def _sequences(config: PretrainConfig, corpus: Corpus, tokenizer) -> tuple[Sequences, dict[str, Any]]:
    """The corpus packed into sequences; the packing is cached (``cache_dir``) under the sha256
    of the files, the vocabulary and the length, so a resumed run, the other ranks of a
    data-parallel run and other runs on the same corpus reuse it."""
    vocab = Path(config.tokenizer) / "vocab.txt"
    key = {"version": PACKING_VERSION, "max_seq_len": config.max_seq_len,
           "vocab": sha256_path(vocab) if vocab.exists() else config.tokenizer,
           "files": [sha256_path(f) for f in corpus.files]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    folder = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    cache, record = folder / f"corpus-{digest}.npz", folder / f"corpus-{digest}.json"
    with file_lock(folder / f"corpus-{digest}.lock", "packing the corpus"):
        if cache.exists() and record.exists():
            log.info("packed corpus: %s (cached)", cache)
            os.utime(cache)  # its mtime is the cache's last use (`paddleqa cache list`)
            return Sequences.load(cache), json.loads(record.read_text(encoding="utf-8"))
        log.info("corpus: %d documents, %d characters from %d files; packing into sequences of <= "
                 "%d tokens", len(corpus.documents), corpus.summary()["characters"],
                 len(corpus.files), config.max_seq_len)
        seqs, stats = pack_sequences(corpus.documents, tokenizer, config.max_seq_len,
                                     progress=config.progress and is_main(), total=len(corpus.documents))
        stats = {**corpus.summary(), **stats}
        seqs.save(cache)
        write_json(record, stats)  # written last: a cache without it is packed again
    return seqs, stats
