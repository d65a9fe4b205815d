"""Tools around the worker, not part of it: the demo, the replay and simulated users that feed
it, and the benchmarks that measure it (pipeline, quality).

Modules:
    demo           `streamrec demo`: the whole path on an embedded broker
    replay         `streamrec replay`: a dataset published in time order
    simulate       `streamrec simulate`: simulated users answering slates
    bench          `streamrec bench pipeline`: the worker against a passthrough agent
    passthrough    the reference agent bench pipeline measures against
    quality        prequential scoring of published slates (pure)
    quality_bench  `streamrec bench quality`: a replay through a worker, scored
    quality_report the figures, plot and report of a quality run (live or offline)
    offline        `streamrec bench quality --offline`: the replay in one process, no broker
"""
