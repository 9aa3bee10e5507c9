"""Quant-Noise (Fan, Stock et al., ICLR 2021) for toolkit: quantization noise in training,
int8 weights decoded with integer kernels, and iterative product quantization (iPQ)."""
