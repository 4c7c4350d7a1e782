"""Evidence: measurement and presentation that sit above the core.

Benchmarks (kernel and deployed-policy latency), report writers (markdown tables, JSON) and
plots (matplotlib). Modules here may import every core layer (quant, bags, control, drift,
policy, sim, robot); nothing in the core imports them, so the core stays library code
(test_layers.py checks both).
"""
