"""Translation: a folder of parallel text -> tokenizers, binarized splits, model, criterion."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from toolkit.data.batching import EpochBatchIterator
from toolkit.data.indexed_dataset import IndexedDataset
from toolkit.data.language_pair_dataset import LanguagePairDataset
from toolkit.data.preprocess import DataError, PreprocessSettings, load_tokenizers, preprocess
from toolkit.data.tokenizer import Tokenizer, tokenizer_from_state_dict
from toolkit.data.toy_corpus import write_toy_corpus
from toolkit.registry import Registries
from toolkit.tasks.base import Task

logger = logging.getLogger(__name__)

_SPLIT_HINT = (". A run trains on dataset.train_subset and validates on dataset.valid_subset: give a "
               "split's files, name another split (dataset.valid_subset=NAME), or train without validation "
               "(dataset.valid_subset=null)")


@dataclass
class TranslationConfig:
    _name: str = "translation"
    data: Optional[str] = None  # folder with {split}.{source_lang,target_lang}; null: the toy corpus
    source_lang: str = "src"
    target_lang: str = "tgt"
    destdir: str = "${checkpoint.save_dir}/data-bin"  # binarized data (rebuilt when stale)
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    tokenizer: str = "sentencepiece"  # sentencepiece | pretokenized (split on spaces, as given)
    vocab_size: int = 8000  # sentencepiece pieces (an upper bound), or most frequent words
    joint_vocab: bool = True  # one vocabulary for both sides
    spm_model_type: str = "unigram"  # unigram | bpe | char | word
    character_coverage: float = 1.0
    min_count: int = 1  # pretokenized: rarer words become <unk>
    toy_pairs: int = 20000  # training pairs of the toy corpus when data is null
    # binarize with the tokenizers of this checkpoint (or binarized folder) instead of training
    # new ones: fine-tuning on new data, a student on a teacher's distilled corpus
    tokenizers_from: Optional[str] = None
    # drop (and count in the log) the pairs with a line that is not UTF-8; false: such a line is
    # an error naming its file and line
    skip_undecodable: bool = False


class TranslationTask(Task):
    def __init__(self, cfg: TranslationConfig, run_cfg: DictConfig):
        super().__init__(cfg, run_cfg)
        self.src_tokenizer: Tokenizer | None = None
        self.tgt_tokenizer: Tokenizer | None = None

    @property
    def src_dict(self):
        return self.src_tokenizer.dictionary

    @property
    def tgt_dict(self):
        return self.tgt_tokenizer.dictionary

    def data_dir(self) -> Path:
        if self.cfg.data is not None:
            return Path(self.cfg.data)
        toy = Path(self.cfg.destdir) / "toy-text"
        logger.info("task.data is not set: using the generated toy corpus in %s", toy)
        return write_toy_corpus(toy, n_train=self.cfg.toy_pairs, seed=1)

    def settings(self) -> PreprocessSettings:
        c = self.cfg
        source, target = c.source_lang, c.target_lang
        if c.data is None:
            source, target = "src", "tgt"
        return PreprocessSettings(source, target, tuple(c.splits), c.tokenizer, c.vocab_size, c.joint_vocab,
                                  c.spm_model_type, c.character_coverage, c.min_count, seed=1,
                                  tokenizers_from=c.tokenizers_from, skip_undecodable=c.skip_undecodable or None)

    def check_splits(self, splits: list[str]) -> None:
        """Fail, before any work, unless the text of each of ``splits`` will be binarized:
        listed in ``task.splits`` and, for a data folder, both of its files there."""
        s, problems = self.settings(), []
        if self.cfg.data is not None and not Path(self.cfg.data).is_dir():
            raise DataError(f"data folder {self.cfg.data} does not exist (task.data)")
        for split in splits:
            if split not in s.splits:
                problems.append(f"split {split!r} is not in task.splits={list(s.splits)}: add it there")
            elif self.cfg.data is not None:
                files = [Path(self.cfg.data) / f"{split}.{lang}" for lang in (s.source_lang, s.target_lang)]
                missing = [str(path) for path in files if not path.is_file()]
                if missing:
                    problems.append(f"split {split!r}: missing {' and '.join(missing)}")
        if problems:
            raise DataError("; ".join(problems) + _SPLIT_HINT)

    def prepare(self) -> None:
        destdir = preprocess(self.data_dir(), self.cfg.destdir, self.settings())
        self.src_tokenizer, self.tgt_tokenizer = load_tokenizers(destdir)
        logger.info("vocabularies: %s %d, %s %d", self.settings().source_lang, len(self.src_dict),
                    self.settings().target_lang, len(self.tgt_dict))

    def load_dataset(self, split: str, max_positions: int | None) -> LanguagePairDataset:
        s = self.settings()
        prefix = Path(self.cfg.destdir) / split
        src = IndexedDataset(f"{prefix}.{s.source_lang}")
        tgt = IndexedDataset(f"{prefix}.{s.target_lang}")
        return LanguagePairDataset(src, tgt, self.src_dict, self.tgt_dict, max_positions, name=split)

    def batch_iterator(self, dataset: LanguagePairDataset, train: bool, shard: tuple[int, int] = (0, 1),
                       pin_memory: bool = False) -> EpochBatchIterator:
        d = self.run_cfg.dataset
        return EpochBatchIterator(dataset, d.max_tokens, d.max_sentences, seed=self.run_cfg.common.seed,
                                  shuffle=train, bucket_by_length=d.bucket_by_length or not train,
                                  num_workers=d.num_workers, shard=shard, pin_memory=pin_memory)

    def build_model(self, registries: Registries, model_cfg: Any):
        return registries.model.build(model_cfg, self.src_dict, self.tgt_dict)

    def build_criterion(self, registries: Registries, criterion_cfg: Any):
        return registries.criterion.build(criterion_cfg, self.tgt_dict.pad)

    def state_dict(self) -> dict[str, Any]:
        return {"src_tokenizer": self.src_tokenizer.state_dict(), "tgt_tokenizer": self.tgt_tokenizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.src_tokenizer = tokenizer_from_state_dict(state["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state_dict(state["tgt_tokenizer"])
