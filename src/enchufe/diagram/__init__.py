"""Sequence diagrams of real runs, drawn from the trace's events.

model.py     events → lifelines, steps (each call on its lifeline, in order) and arrows
             (connections, bytes, datagrams, EOF), the two ends matched by their addresses
words.py     the diagram's words (lifeline names, wait marks) in the current language
mermaid.py   the model as Mermaid text (``.md`` fenced, ``.mmd`` raw): no dependency
draw.py      the model as SVG or PNG with matplotlib (the optional extra ``plot``)
files.py     reading ``--trace-file`` outputs and writing a diagram by the file's suffix
"""
