"""A beam's hypotheses share their sentence's encoder row (``new_state(rows_per_source=K)``):
decoding must equal the plain definition, the encoder output copied once per hypothesis, through
beam reorders, sentences leaving the batch and early exits; and the cross-attention keys and
values are really computed and kept once per sentence."""

import pytest
import torch

from toolkit.generation.exit_policy import decode_step_with_exits
from toolkit.models.base import EncoderOutput

from tests.generation.test_exit_compaction import BLOCKS, STEPS, TablePolicy, build, inputs

SENTENCES, BEAM = 4, 3


def copied(encoder_out: EncoderOutput, group: int) -> EncoderOutput:
    """(B, S, C) -> (B*group, S, C): each sentence's row once per hypothesis."""
    return EncoderOutput(encoder_out.states.repeat_interleave(group, 0),
                         encoder_out.padding_mask.repeat_interleave(group, 0))


def run(model, src, targets, tables, shared: bool) -> list[torch.Tensor]:
    """Decode STEPS steps of SENTENCES x BEAM rows; after step 1 the beams reorder, after step 3
    sentence 1 leaves. Returns each step's logits."""
    encoder_out = model.encoder(src, None)
    state = model.decoder.new_state(rows_per_source=BEAM if shared else 1)
    if not shared:
        encoder_out = copied(encoder_out, BEAM)
    rows_tokens = targets.repeat_interleave(BEAM, 0)  # (B*K, STEPS)
    live, logits = torch.arange(SENTENCES), []
    for t in range(STEPS):
        step_tokens = rows_tokens[:, t : t + 1]
        if tables is None:
            logits.append(model.decoder(step_tokens, encoder_out, state=state).logits[:, -1])
        else:
            logits.append(decode_step_with_exits(model.decoder, step_tokens, encoder_out, state,
                                                 TablePolicy(tables[t : t + 1, : step_tokens.size(0)]))[0])
        if t == 1:  # every sentence's beam continues its last hypothesis in every slot
            order = (torch.arange(len(live))[:, None] * BEAM + BEAM - 1).expand(-1, BEAM).reshape(-1)
            state.reorder(order)
            rows_tokens = rows_tokens[order]
        if t == 3:  # sentence 1 finished
            keep = torch.tensor([0, 2, 3])
            kept_rows = (keep[:, None] * BEAM + torch.arange(BEAM)).view(-1)
            source_rows = keep if shared else kept_rows
            encoder_out = EncoderOutput(encoder_out.states[source_rows], encoder_out.padding_mask[source_rows])
            state.select_sentences(kept_rows)
            state.reorder(kept_rows)
            rows_tokens, live = rows_tokens[kept_rows], live[keep]
    return logits


@pytest.mark.parametrize("exits", [False, True])
def test_a_shared_encoder_row_decodes_as_a_copy_per_hypothesis(exits):
    model = build(pre_norm=True)
    src, targets, tables = inputs(SENTENCES)
    if exits:
        tables = torch.randint(1, BLOCKS + 1, (STEPS, SENTENCES * BEAM), generator=torch.Generator().manual_seed(2))
    else:
        tables = None
    with torch.inference_mode():
        shared = run(model, src, targets, tables, shared=True)
        plain = run(model, src, targets, tables, shared=False)
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cross_attention_keys_are_kept_once_per_sentence():
    model = build(pre_norm=True)
    src, targets, _ = inputs(SENTENCES)
    encoder_out = model.encoder(src, None)
    state = model.decoder.new_state(rows_per_source=BEAM)
    projected_rows = []
    hook = model.decoder.layers[0].cross_attn.kv_proj.register_forward_hook(
        lambda module, args, out: projected_rows.append(args[0].size(0)))
    with torch.inference_mode():
        for t in range(2):
            model.decoder(targets.repeat_interleave(BEAM, 0)[:, t : t + 1], encoder_out, state=state)
    hook.remove()
    assert projected_rows == [SENTENCES]  # once, for the sentences, not their SENTENCES * BEAM rows
    assert state.cross_attn[0].key.size(0) == SENTENCES
    state.select_sentences(torch.arange(BEAM, 3 * BEAM))  # sentences 1 and 2 stay
    assert state.cross_attn[0].key.size(0) == 2


def test_rows_that_do_not_fill_their_groups_are_refused():
    model = build(pre_norm=True)
    src, targets, _ = inputs(SENTENCES)
    state = model.decoder.new_state(rows_per_source=BEAM)
    with pytest.raises(ValueError, match="do not divide into groups of 3"):
        model.decoder(targets[:, :1].repeat(2, 1), model.encoder(src, None), state=state)
    with pytest.raises(ValueError, match="rows_per_source"):
        model.decoder.new_state(rows_per_source=0)
