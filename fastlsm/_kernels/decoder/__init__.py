"""The beam-search decoder: transformers' ``generate(num_beams=K)`` over caller-owned state."""
