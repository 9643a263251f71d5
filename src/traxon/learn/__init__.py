"""Learning while the network runs: the online learner, losses and checkpoints."""

from traxon.learn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from traxon.learn.learner import LearnerState, OnlineLearner, online_learner
from traxon.learn.losses import LOSSES, Loss, cross_entropy, get_loss, mse
from traxon.learn.optimizers import SGD, sgd

__all__ = [
    "LOSSES",
    "SGD",
    "CheckpointError",
    "LearnerState",
    "Loss",
    "OnlineLearner",
    "cross_entropy",
    "get_loss",
    "load_checkpoint",
    "mse",
    "online_learner",
    "save_checkpoint",
    "sgd",
]
