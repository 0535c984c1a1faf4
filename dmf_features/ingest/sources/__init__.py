"""Source readers: MovieLens-format files and the synthetic generator."""
