"""MoD (Raposo et al.): 8 layers, capacity 0.125 on every other layer, raw router gate, BCE aux
loss for causal routing. 1.11x the forward FLOPs/token of the 4-layer dense baseline, so it trains
~0.9x the steps (equal total training FLOPs; see experiments/lib/iso_flop_configs.py).

python -m rocket.train --config experiments/configs/mod_c125.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment(
        "mod_c125",
        baseline_layers=4,
        n_layers=8,
        mod=dict(pattern="dense,mod", capacity=0.125),
    )
