"""Training the network on a panel, and fitting the weight of its corrections on held-out panel individuals."""
