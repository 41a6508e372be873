"""p-MoD options on text: 8 layers, every layer a candidate, progressive ratio decay (rho-bar 0.5:
layers 0-1 dense, then capacities decaying to the 0.15 floor), TanhNorm gate with STRing, and a
stop-gradient predictor for causal routing. Equal total training FLOPs to the 4-layer dense baseline.

python -m rocket.train --config experiments/configs/mod_pmod.py
"""

from experiments.lib.iso_flop_configs import routing_experiment


def get_config():
    return routing_experiment(
        "mod_pmod",
        baseline_layers=4,
        n_layers=8,
        mod=dict(pattern="mod", schedule="prd", capacity=0.5, gate="tanhnorm", string=True),
        router=dict(causal="predictor"),
    )
