"""Training in PyTorch: members from recipes, diversity-enforcing joint ensembles, low-cost ensembles."""
