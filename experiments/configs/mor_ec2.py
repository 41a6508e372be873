"""MoR expert-choice (Bae et al.): middle-cycle sharing 1 + (2 x 2) + 1 = 6 layer applications,
N_r = 2 recursions with capacities (1, 1/2), sigmoid gate alpha = 0.1, BCE aux loss 0.001.
4 unique layers; equal total training FLOPs to the 5-layer dense baseline.

python -m rocket.train --config experiments/configs/mor_ec2.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment(
        "mor_ec2",
        baseline_layers=5,
        n_layers=6,
        mor=dict(sharing="middle_cycle", recursions=2, router="expert"),
    )
