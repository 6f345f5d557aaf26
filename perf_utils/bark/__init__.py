"""Bark itself: the configurations as data, checkpoints (the embedded tiny one too), loading a configuration,
the fixed workload, version differences, the device layer, the machine's facts, and faults to inject.
The torch side of the suite starts here."""
