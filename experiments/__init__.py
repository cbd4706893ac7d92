"""Experiments: one config file drives prepare -> train -> generate -> evaluate for several arms (pages at
several compressions, the same decoder on text tokens, a seq2seq baseline, Lead-3) and writes one comparison.

The top layer: it calls the typed stage functions of the data, training, inference and evaluation packages (the
functions behind their commands), so each arm's folders are exactly what those commands write by hand.
"""
