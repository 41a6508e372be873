"""Decoding tools that do not run on the engine loop: byte-level views of a tokenized LM.

  * `byte_probs`: exact next-byte probabilities of a token LM, byte-level sampling and ensembles of
    models with different vocabularies (host-side, memoised model calls).
  * `regex_dfa`: a regex compiled to a token-level transition table (the constraint of
    `rocket.decode.methods.awrs`).

Tools may use the engine room (`rocket.decode.protocol`, `rocket.decode.sampling`) but never import
a method: methods import tools, not the reverse.
"""
