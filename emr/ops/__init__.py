"""Operations (issue 16 §3): Prometheus metrics of the EMR and the administrators' operations page.

``instruments`` holds the counters and histograms other EMR modules observe
(request and signing latency); ``metrics`` turns them and a few database
figures into a Prometheus exposition; ``service`` computes the operations
page from SQL aggregates.
"""
