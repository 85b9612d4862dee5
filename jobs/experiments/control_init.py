"""The no-pretraining control of an experiment: the initial weights a pretraining of CONFIG with
run.seed SEED starts from, saved as a model directory with its tokenizer, and never trained.
Usage: control_init.py CONFIG SEED DIR [KEY=VALUE ...] (overrides as pretrain's --set, e.g. data.k=1)"""

import sys

import torch

from randommask import KmerTokenizer
from randommask.training.config import load_config
from randommask.training.model import build_mlm

config, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = load_config(config, sys.argv[4:])
torch.manual_seed(seed)  # as the pretraining worker does before building the model
build_mlm(cfg.model.preset, cfg.data.k, **cfg.model.overrides).save_pretrained(out)
KmerTokenizer(cfg.data.k).save_pretrained(out)
