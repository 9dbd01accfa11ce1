"""Ahead-of-time and evidence tools: AOT compilation and the compile report, the memory-traffic table, SD shape
tables. They read the runtime (kernels, configs); the runtime never imports them."""
