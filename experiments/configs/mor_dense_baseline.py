"""Dense baseline for the MoR runs: 5 layers at d=128 (T=256), ~the forward FLOPs/token of
mor_ec2.py (1.01x) with 1.24x its parameters.

python -m rocket.train --config experiments/configs/mor_dense_baseline.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment("mor_dense_baseline", baseline_layers=5, n_layers=5)
