"""How the opened model runs: whole in memory, or one decoder layer at a time when it does not fit; and the
passes (perplexity, fidelity, generation) that run over either."""
