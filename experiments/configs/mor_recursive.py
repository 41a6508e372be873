"""Recursive baseline for MoR (no router): the same middle-cycle stack as mor_ec2.py with every
token taking both recursions; equal total training FLOPs to the 5-layer dense baseline.

python -m rocket.train --config experiments/configs/mor_recursive.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment(
        "mor_recursive",
        baseline_layers=5,
        n_layers=6,
        mor=dict(sharing="middle_cycle", recursions=2, router="none"),
    )
