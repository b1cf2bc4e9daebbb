"""Sessions: the model (a leaf), the load chain and commit, the in-process cache, the window."""
