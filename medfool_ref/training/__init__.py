"""Training: the one loop every model here is trained with, and the reference model's recipe."""
