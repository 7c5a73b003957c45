"""What is attacked: the reference tile classifier (architecture and safe loading), later users' models."""
