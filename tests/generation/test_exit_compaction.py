"""Early exits save real work: after a hypothesis exits, the blocks above run only the others.

The reference is the plain definition: every row through every block, an exited row's state
copied upward (``torch.where``), so blocks above compute its keys/values from that state.
"""

import copy
import dataclasses

import pytest
import torch

from toolkit.data.dictionary import Dictionary
from toolkit.generation.exit_policy import ExitPolicy, decode_step_with_exits
from toolkit.models.architectures import transformer_tiny
from toolkit.models.transformer import TransformerModel

VOCAB = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(40)])
BLOCKS, ROWS, STEPS = 4, 6, 6


def build(pre_norm: bool) -> TransformerModel:
    torch.manual_seed(0)
    cfg = dataclasses.replace(transformer_tiny(), dropout=0.0, encoder_layers=2, decoder_layers=BLOCKS,
                              encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_dim=64,
                              decoder_ffn_dim=64, normalize_before=pre_norm)
    return TransformerModel.from_config(cfg, VOCAB, VOCAB).eval()


class TablePolicy(ExitPolicy):
    """Row r exits after block ``tables[step][r]`` (1-based). Rows come in batch order, those
    still running only, so the policy follows which is which itself."""

    def __init__(self, tables: torch.Tensor):
        self.tables, self.step, self.running = tables, -1, None

    def should_exit(self, block, hidden, decoder):
        if block == 0:
            self.step += 1
            self.running = torch.arange(self.tables.size(1))
        assert hidden.size(0) == self.running.numel()
        exits = self.tables[self.step][self.running] == block + 1
        self.running = self.running[~exits]
        return exits


def masked_step(decoder, tokens, encoder_out, state, policy):
    """Every row through every block; exited rows keep (copy upward) their state."""
    x = decoder.embedding(tokens, state.length)
    running = torch.ones(x.size(0), dtype=torch.bool)
    for i, layer in enumerate(decoder.layers):
        out = layer(x, encoder_out.states, encoder_out.padding_mask, state.self_attn[i], state.cross_attn[i])
        x = torch.where(running[:, None, None], out, x)
        if i < len(decoder.layers) - 1 and running.any():
            rows = running.nonzero().squeeze(1)
            running[rows[policy.should_exit(i, x[rows, 0], decoder)]] = False
    state.length += 1
    return decoder.project(x[:, 0])


def inputs(rows: int = ROWS):
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 9, (rows,), generator=generator)
    src = torch.full((rows, int(lengths.max())), VOCAB.pad)
    for r, n in enumerate(lengths.tolist()):
        src[r, :n] = torch.randint(4, len(VOCAB), (n,), generator=generator)
        src[r, n - 1] = VOCAB.eos
    targets = torch.randint(4, len(VOCAB), (rows, STEPS), generator=generator)
    targets[:, 0] = VOCAB.bos
    # exits at every block, whole steps where all rows leave after block 1, and none leaving
    tables = torch.randint(1, BLOCKS + 1, (STEPS, rows), generator=generator)
    tables[2] = 1
    tables[4] = BLOCKS
    return src, targets, tables


def decode(model, src, targets, tables, step_fn):
    encoder_out = model.encoder(src, None)
    state, policy = model.decoder.new_state(), TablePolicy(tables)
    return torch.stack([step_fn(model.decoder, targets[:, t : t + 1], encoder_out, state, policy)
                        for t in range(targets.size(1))], dim=1)  # (N, STEPS, V)


def compacted(decoder, tokens, encoder_out, state, policy):
    return decode_step_with_exits(decoder, tokens, encoder_out, state, policy)[0]


@pytest.mark.parametrize("pre_norm", [False, True])
@torch.inference_mode()
def test_compacted_steps_equal_running_every_row_through_every_block(pre_norm):
    model = build(pre_norm)
    src, targets, tables = inputs()
    expected = decode(model, src, targets, tables, masked_step)
    torch.testing.assert_close(decode(model, src, targets, tables, compacted), expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_few_running_rows_gather_their_caches_and_still_match():
    """With under 1/8 of the rows running, attention copies their cached keys/values out
    (``attention._gather_first``) instead of attending with every row: the same result."""
    model = build(pre_norm=False)
    src, targets, tables = inputs(rows=40)
    tables[1:4] = 1
    tables[1:4, :3] = BLOCKS  # 3 of 40 rows run every block of steps 1..3
    expected = decode(model, src, targets, tables, masked_step)
    torch.testing.assert_close(decode(model, src, targets, tables, compacted), expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_exit_blocks_are_reported_per_row():
    model = build(pre_norm=False)
    src, targets, tables = inputs()
    encoder_out, state, policy = model.encoder(src, None), model.decoder.new_state(), TablePolicy(tables)
    for t in range(STEPS):
        _, exit_block, _ = decode_step_with_exits(model.decoder, targets[:, t : t + 1], encoder_out, state, policy)
        assert exit_block.tolist() == tables[t].tolist()


@torch.inference_mode()
def test_blocks_above_an_exit_run_only_the_rows_still_running():
    model = build(pre_norm=True)
    src, targets, tables = inputs()
    rows_seen = {i: [] for i in range(BLOCKS)}  # rows through each block's feed-forward, per step
    for i, layer in enumerate(model.decoder.layers):
        layer.ffn.register_forward_hook(lambda module, args, out, i=i: rows_seen[i].append(args[0].size(0)))
    decode(model, src, targets, tables, compacted)
    for i in range(BLOCKS):
        still_running = [int((tables[t] > i).sum()) for t in range(STEPS)]  # rows that reach block i+1
        assert [n for n in rows_seen[i]] == [n for n in still_running if n], i
    assert rows_seen[BLOCKS - 1].count(ROWS) == 1  # only the step where no row exits ran everything


@torch.inference_mode()
def test_a_row_decoded_alone_matches_the_row_in_a_mixed_batch():
    model = build(pre_norm=False)
    src, targets, tables = inputs()
    batched = decode(model, src, targets, tables, compacted)
    for r in range(ROWS):
        length = int((src[r] != VOCAB.pad).sum())
        alone = decode(model, src[r : r + 1, :length], targets[r : r + 1], tables[:, r : r + 1], compacted)
        torch.testing.assert_close(alone[0], batched[r], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_exiting_every_row_at_block_two_equals_the_two_block_model():
    model = build(pre_norm=True)
    src, targets, _ = inputs()
    two_blocks = copy.deepcopy(model)
    del two_blocks.decoder.layers[2:]
    expected = two_blocks(src, None, targets).logits  # (N, STEPS, V), the whole prefix at once
    early = decode(model, src, targets, torch.full((STEPS, ROWS), 2), compacted)
    torch.testing.assert_close(early, expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_keys_of_exited_positions_are_computed_once_and_only_where_a_later_position_needs_them():
    """Block b computes the keys/values of a hypothesis's position p once, and only if p itself
    ran block b or a later position of the hypothesis did (it attends to p's copied state
    there). Counted in the rows through each block's fused QKV projection."""
    model = build(pre_norm=True)
    src, targets, tables = inputs()
    tables[3:] = 1  # after step 2 every row leaves after block 1: nobody needs upper keys of 2..
    rows_seen = {i: 0 for i in range(BLOCKS)}
    for i, layer in enumerate(model.decoder.layers):
        layer.self_attn.qkv_proj.register_forward_hook(
            lambda module, args, out, i=i: rows_seen.__setitem__(i, rows_seen[i] + args[0].size(0)))
    expected_logits = decode(model, src, targets, tables, masked_step)
    rows_seen = {i: 0 for i in range(BLOCKS)}
    logits = decode(model, src, targets, tables, compacted)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    deepest_from_here = tables.flip(0).cummax(0).values.flip(0)  # (STEPS, ROWS): max exit at p.. end
    for i in range(BLOCKS):
        assert rows_seen[i] == int((deepest_from_here > i).sum()), i
    assert rows_seen[BLOCKS - 1] < ROWS * 3 < ROWS * STEPS  # the eager copy computed ROWS * STEPS
