"""Knowledge distillation for toolkit: word-level KD (a criterion) and sequence-level KD (a
teacher-translated training corpus), in one command (``toolkit-distill``)."""
