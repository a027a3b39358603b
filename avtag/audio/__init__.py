"""Audio branch: log-mel front-ends, MIL pooling, the model families and the tagger."""
