"""``enchufe bench``: throughput, latency, connection rate and datagram rate/loss for every kind.

::

    sequence.py   sans-IO: the datagram payload header and the accounting of sequence numbers
    stats.py      pure: percentiles from every sample
    results.py    the figures as values, and their JSON form (one object per run)
    measures.py   the measurement loops: what is timed, and how
    servers.py    bench's own servers (sink, echo, accept-close, counting sink), in a child process
    process.py    starting and talking to that child process
    runner.py     options, the plan of measures, running it
    report.py     the table and the progress bar (rich, imported only here)
    plot.py       ``--plot FILE.png`` (matplotlib, an optional extra)
    compare.py    ``--compare FILE.json``: the difference to an earlier run
    command.py    the one call the CLI makes: check, measure, print (exit status)

Nothing here is imported by ``import enchufe``; the CLI imports it when ``bench`` runs.
"""
