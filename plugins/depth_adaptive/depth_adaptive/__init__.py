"""Depth-Adaptive Transformer (Elbayad, Gu, Grave and Auli, ICLR 2020) for toolkit: a classifier
after every decoder block, aligned and mixed multi-exit training, and per-token exit policies
(confidence, DeeBERT's entropy, PABEE's patience) whose exited hypotheses skip the blocks above
in batched beam search."""

__version__ = "0.1.0"
