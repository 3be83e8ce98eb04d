"""Training masked networks: datasets as padded stacks and their minibatches (`batches`), and the trainer of one
model shape (`trainer`): population training, fine-tuning with patience (one network, or packed slots), accuracy.

    trainer = fit.make_trainer(model, learning_rate)   # cached per shape
    variables, opt_state = trainer.train(key, variables, opt_state, archs, dataset_index, data, epochs=..., ...)
"""

from neon_jax.fit.batches import PaddedData, gather_batch, network_keys, pad_data, shuffle_real_rows, stack_data
from neon_jax.fit.trainer import Trainer, active_groups, log_probs, make_trainer
from neon_jax.nets import Trainable

__all__ = ["PaddedData", "Trainable", "Trainer", "active_groups", "gather_batch", "log_probs", "make_trainer",
           "network_keys", "pad_data", "shuffle_real_rows", "stack_data"]
