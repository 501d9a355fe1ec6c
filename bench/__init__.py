"""pixelmill benchmarks: speed against two baselines, peak memory, and the HTTP API.

Run with ``make bench`` (``python -m bench``); ``python -m bench --help`` lists the options.
"""
