"""Experiments and analysis: several runs at once (--seeds, sweeps), the runs table and
`lab compare`."""
