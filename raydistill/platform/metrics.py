"""Metric names shared by the code that reports (Train, Tune) and the code that reads (report).

One set of constants so a renamed metric cannot silently break the report.
"""

TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
EPOCH = "epoch"
ROUND = "round"
LABELED_COUNT = "labeled_count"
PARAMS = "params"
LAYERS = "layers"
STRATEGY = "strategy"
TEMPERATURE = "temperature"
SEED = "seed"
ALPHA = "alpha"
LR = "lr"
LOSS_CE = "loss/ce"
LOSS_KD = "loss/kd"
LOSS_HIDDEN = "loss/hidden"
ACQUISITION = "acquisition"
