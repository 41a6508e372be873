"""The shared machinery of rocket's experiments; the scripts next to this package (`repro_*.py`,
`bench_*.py`, `repro_all.py`) import from here and from `rocket`, never from each other.

  runs             byte-level experiment configs, training with the standard trainer, logged curves,
                   restoring a run's parameters (the one restore helper), fresh work directories
  per_token        validation batches, per-token scoring (nats, top-1, position), position buckets
  stats            seed statistics: mean_spread, diff_over_seeds, spread, signed
  results          the result format (Claim, Report, write_results, load_results) and the README's
                   Results section
  cli              a repro script's command line and main (repro_args, seeds, repro_main)
  routing          MoD / MoR families at equal training FLOPs, run from a table of models; verdicts
  routing_measure  one routed model: two-mode (top-k / causal) evaluation, forward timing, its FLOPs
  routing_plots    the families' figure panels
  iso_flop_configs the iso-FLOP ConfigDicts of experiments/configs/mo[dr]_*.py
  decode_models    small models trained once for the decoding-transform benchmarks
  decode_bench     the speculative-decoding measurement (bench_decode, repro_decoding, bench_device)
  bench_timing     side-by-side timing: callables called round-robin, best of n each
  bench_peers      rocket's train step vs nanodo's (a source checkout) at equal shapes and FLOPs
  bench_kernels    the kernel benchmark's sections (bench_kernels, bench_device)
  bench_train      one dense train-step measurement: step time, tokens/s, MFU (bench_train, bench_device)
  bench_routing    dense vs MoD vs MoR forward / train-step time against their FLOP ratio

Adding an experiment: docs/extending.md ("a new experiment").
"""
