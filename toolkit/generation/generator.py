"""The decoding loop: encoder once, incremental decoder steps, finished sentences leave.

``SequenceGenerator.generate(src_tokens, src_lengths)`` returns, per sentence, its best
hypotheses sorted by score. Scores are summed token log-probabilities divided by
``length ** lenpen`` (length counts the final </s>).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from toolkit.data.dictionary import Dictionary
from toolkit.errors import ConfigError
from toolkit.generation.exit_policy import ExitPolicy, decode_step_with_exits
from toolkit.generation.search import Search
from toolkit.models.base import EncoderOutput
from toolkit.models.ensemble import refuse_exit_policy


@dataclass
class GenerationConfig:
    beam: int = 5
    nbest: int = 1
    lenpen: float = 1.0  # score / length**lenpen; > 1 favours longer outputs
    max_len_a: float = 1.2  # output at most max_len_a * source_length + max_len_b tokens
    max_len_b: int = 10
    min_len: int = 1
    unkpen: float = 0.0  # subtracted from <unk>'s log-probability
    search: Any = field(default_factory=lambda: {"_name": "beam"})
    # a registered exit policy and its settings ({"_name": "fixed_depth", "block": 2});
    # None decodes every hypothesis at full depth
    exit_policy: Any = None


@dataclass
class Hypothesis:
    tokens: torch.Tensor  # (L,) ending in </s>
    score: float  # normalized by the length penalty
    positional_scores: torch.Tensor  # (L,) log-probability of each token


class SequenceGenerator:
    def __init__(self, model, tgt_dict: Dictionary, cfg: GenerationConfig, search: Search,
                 exit_policy: ExitPolicy | None = None):
        self.model, self.dict, self.cfg, self.search = model, tgt_dict, cfg, search
        self.exit_policy = exit_policy
        refuse_exit_policy(model, exit_policy)
        # decoded tokens per exit block (index 0: block 1); int64 on the model's device, read on demand
        self.exit_counts = torch.zeros(len(model.decoder.layers), dtype=torch.long,
                                       device=next(model.parameters()).device)
        self.projected_rows = 0  # rows mapped onto the vocabulary (decisions of exit policies included)
        if cfg.beam < 1 or cfg.nbest > cfg.beam:
            raise ConfigError(f"generation needs beam >= 1 and nbest <= beam (beam={cfg.beam}, nbest={cfg.nbest})")
        if cfg.beam > len(tgt_dict) - 3:
            raise ConfigError(f"beam {cfg.beam} is larger than the target vocabulary allows "
                             f"({len(tgt_dict) - 3} real tokens)")

    @torch.inference_mode()
    def generate(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """src_tokens: (B, S) right-padded -> for each sentence its ``nbest`` hypotheses."""
        model, beam, eos = self.model, self.cfg.beam, self.dict.eos
        batch = src_tokens.size(0)
        device = src_tokens.device
        encoder_out = model.encoder(src_tokens, src_lengths)
        max_target = model.max_positions()[1] - 1
        max_len = (src_lengths.float() * self.cfg.max_len_a + self.cfg.max_len_b).long().clamp(1, max_target)
        # the encoder output stays (B, S, C): a sentence's K hypotheses (rows k*K .. k*K+K-1)
        # share its row, and cross-attention reads it once for them all
        state = model.decoder.new_state(rows_per_source=beam)
        sentence_ids = torch.arange(batch, device=device)  # original index of each live sentence
        tokens = torch.full((batch * beam, 1), self.dict.bos, dtype=torch.long, device=device)
        scores = torch.zeros(batch, beam, device=device)  # cumulative log-probabilities
        token_scores = torch.zeros(batch * beam, 0, device=device)
        finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
        for step in range(int(max_len.max()) + 1):
            live = len(sentence_ids)
            logits = self._decode_step(tokens[:, -1:], encoder_out, state)  # (N, V)
            lprobs = model.log_probs(logits)
            self._constrain(lprobs, step, max_len[sentence_ids].repeat_interleave(beam))
            cand_scores, cand_tokens, cand_beams = self.search.step(step, lprobs.view(live, beam, -1), scores)
            cand_rows = cand_beams + torch.arange(live, device=device)[:, None] * beam  # (live, 2K) into N
            # hypotheses ending here: </s> among each sentence's first K candidates
            ends = (cand_tokens == eos) & (torch.arange(cand_tokens.size(1), device=device) < beam)
            ends &= cand_scores > float("-inf")
            done = torch.zeros(live, dtype=torch.bool, device=device)
            if ends.any():
                for s, c in ends.nonzero().tolist():
                    hyps = finished[int(sentence_ids[s])]
                    if len(hyps) < beam:
                        row = int(cand_rows[s, c])
                        hyps.append(self._hypothesis(tokens[row], token_scores[row], cand_scores[s, c],
                                                     lprobs[row, eos]))
                done = torch.tensor([len(finished[int(i)]) >= beam for i in sentence_ids], device=device)
            done |= step >= max_len[sentence_ids]
            if done.all():
                break
            # continue with each sentence's first K candidates that do not end
            rank = torch.arange(cand_tokens.size(1), device=device).expand_as(cand_tokens)
            rank = rank + ends * cand_tokens.size(1)
            chosen = rank.topk(beam, dim=1, largest=False).indices  # (live, K)
            keep = (~done).nonzero().squeeze(1)  # sentences still decoding
            chosen = chosen[keep]
            new_rows = cand_rows[keep].gather(1, chosen).view(-1)  # (live'*K,) rows of the old batch
            new_tokens = cand_tokens[keep].gather(1, chosen).view(-1, 1)
            scores = cand_scores[keep].gather(1, chosen)
            step_scores = lprobs[new_rows, new_tokens.squeeze(1)].unsqueeze(1)
            if len(keep) < live:  # finished sentences leave: shrink encoder output and caches
                kept_rows = (keep[:, None] * beam + torch.arange(beam, device=device)).view(-1)
                encoder_out = encoder_out.select(keep)
                state.select_sentences(kept_rows)
                sentence_ids = sentence_ids[keep]
            state.reorder(new_rows)
            tokens = torch.cat([tokens[new_rows], new_tokens], dim=1)
            token_scores = torch.cat([token_scores[new_rows], step_scores], dim=1)
        return [sorted(h, key=lambda h: -h.score)[: self.cfg.nbest] for h in finished]

    def _decode_step(self, tokens: torch.Tensor, encoder_out: EncoderOutput, state) -> torch.Tensor:
        decoder = self.model.decoder
        if self.exit_policy is None:
            self.exit_counts[-1] += tokens.size(0)
            self.projected_rows += tokens.size(0)
            return decoder(tokens, encoder_out, state=state).logits[:, -1]
        logits, exit_block, projected = decode_step_with_exits(decoder, tokens, encoder_out, state, self.exit_policy)
        self.exit_counts += torch.bincount(exit_block - 1, minlength=len(self.exit_counts))
        self.projected_rows += projected
        return logits

    def average_exit(self) -> float:
        """Mean number of decoder blocks run per decoded token so far."""
        counts = self.exit_counts.tolist()
        return sum(block * n for block, n in enumerate(counts, start=1)) / max(sum(counts), 1)

    def projections_per_token(self) -> float:
        """Vocabulary projections computed per decoded token so far: 1 at full depth; an exit
        policy that reads every block's distribution to decide pays one per block it asked."""
        return self.projected_rows / max(int(self.exit_counts.sum()), 1)

    def exit_histogram(self) -> list[float]:
        """The fraction of decoded tokens that exited at each block (1 to N) so far."""
        counts = self.exit_counts.tolist()
        return [n / max(sum(counts), 1) for n in counts]

    def _constrain(self, lprobs: torch.Tensor, step: int, max_len: torch.Tensor) -> None:
        """Forbid <s>/<pad>, </s> before min_len; force </s> at each row's max length."""
        lprobs[:, self.dict.bos] = float("-inf")
        lprobs[:, self.dict.pad] = float("-inf")
        lprobs[:, self.dict.unk] -= self.cfg.unkpen
        if step < self.cfg.min_len:
            lprobs[:, self.dict.eos] = float("-inf")
        at_limit = step >= max_len  # (N,)
        if at_limit.any():
            eos_scores = lprobs[at_limit, self.dict.eos].clone()
            lprobs[at_limit] = float("-inf")
            lprobs[at_limit, self.dict.eos] = eos_scores.clamp(min=-1e4)  # a finite score even if forbidden

    def _hypothesis(self, tokens: torch.Tensor, token_scores: torch.Tensor, score: torch.Tensor,
                    eos_score: torch.Tensor) -> Hypothesis:
        output = torch.cat([tokens[1:], tokens.new_tensor([self.dict.eos])])  # drop <s>, add </s>
        positional = torch.cat([token_scores, eos_score.view(1)])
        return Hypothesis(output.cpu(), float(score) / len(output) ** self.cfg.lenpen, positional.cpu())
