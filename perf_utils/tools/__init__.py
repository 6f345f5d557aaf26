"""Commands built on the whole flow: gate-quality (how good the gate is here) and the two-stack upgrade gate."""
