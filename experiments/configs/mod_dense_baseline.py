"""Dense baseline for the MoD runs: 4 layers at d=128 (the quickstart shape, T=256).

python -m rocket.train --config experiments/configs/mod_dense_baseline.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment("mod_dense_baseline", baseline_layers=4, n_layers=4)
