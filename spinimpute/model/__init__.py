"""The model: its hyperparameters (`config`), the SPIN network (a pure nn.Module), and the copying
model in torch and in numpy."""
