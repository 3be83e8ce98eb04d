"""Training masked networks.

- `batches`: datasets as padded splits and stacks, their shuffles and minibatches;
- `optim`: the masked optimiser (Adam as an optax `GradientTransformation`, frozen groups skipped);
- `loops`: train and fine-tune ONE network on one split (`Learner`: model, optimiser, data loss);
- `population`: the loops over many networks (vmap, depth-sorted chunks, packed fine-tune slots);
- `trainer`: the jitted population programs of one model shape (`make_trainer`, cached).

    trainer = fit.make_trainer(model, learning_rate)   # cached per shape
    variables, opt_state, losses = trainer.train(key, variables, opt_state, archs, dataset_index, data,
                                                 epochs=..., batch_size=...)
    tuned, info = fit.finetune(trainer.learner, key, variables, arch, split, trainable, max_epochs=...,
                               batch_size=..., patience=...)
"""

from neon_jax.fit.batches import PaddedData, gather_batch, network_keys, pad_data, shuffle_real_rows, stack_data
from neon_jax.fit.loops import (
    Learner,
    TuneState,
    accuracy,
    cross_entropy,
    finetune,
    log_probs,
    logits,
    loss,
    sgd_step,
    train,
    train_epoch,
)
from neon_jax.fit.optim import masked_adam, masked_step
from neon_jax.fit.population import active_groups, finetune_packed
from neon_jax.fit.trainer import Trainer, make_trainer
from neon_jax.nets import Trainable

__all__ = ["Learner", "PaddedData", "Trainable", "Trainer", "TuneState", "accuracy", "active_groups",
           "cross_entropy", "finetune", "finetune_packed", "gather_batch", "log_probs", "logits", "loss",
           "make_trainer", "masked_adam", "masked_step", "network_keys", "pad_data", "sgd_step",
           "shuffle_real_rows", "stack_data", "train", "train_epoch"]
