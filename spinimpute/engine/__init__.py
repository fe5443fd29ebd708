"""Running a trained model: the backends (CPU, torch) behind one protocol, the window-by-window
engine, phasing, INFO statistics and the choice of device."""
