"""Training the generator (torch). Never imported by the inference path."""
