"""Test and demo fixtures: tiny offline pipelines, the demo and the Triton-interpreter fixes. The runtime never
imports them."""
