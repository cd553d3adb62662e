"""``enchufe bench``: throughput, latency, connection rate and datagram rate/loss for every kind.

::

    sequence.py   sans-IO: the datagram payload header and the accounting of sequence numbers
    stats.py      pure: percentiles from every sample
    results.py    the figures as values, and their JSON form (one object per run)
    loops.py      what every measurement loop shares: kernel timeouts, errors, worker threads
    measures.py   the measurement loops: what is timed, and how (throughput, latency, connections)
    datagram_rate.py  datagram rate and loss, counted by sequence number
    servers.py    bench's own servers (sink, echo, accept-close, counting sink), in a child process
    process.py    starting and talking to that child process
    options.py    the options, their defaults and limits, checked before any socket is opened
    runner.py     the plan of measures, running it
    progress.py   the live progress bar on stderr (rich, imported only when drawn)
    report.py     the tables (rich when installed, plain text otherwise)
    plot.py       ``--plot FILE.png`` (matplotlib, an optional extra)
    compare.py    ``--compare FILE.json``: the difference to an earlier run
    command.py    the one call the CLI makes: check, measure, print (exit status)

Nothing here is imported by ``import enchufe``; the CLI imports it when ``bench`` runs.
"""
