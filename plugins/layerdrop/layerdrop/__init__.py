"""LayerDrop (Fan, Grave and Joulin, ICLR 2020) for toolkit: structured block dropout in
training, and pruning a trained model to any depth without fine-tuning."""
