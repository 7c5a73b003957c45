"""What attacks run on: tile files, the shipped sample tiles and their class scheme (later, slides)."""
