"""Experiments: one config file drives prepare -> train -> generate -> evaluate for several arms (pages at
several compressions, the same decoder on text tokens, a seq2seq baseline, Lead-3) and writes one comparison.

The top layer: it runs the ordinary commands of the data, training and evaluation packages, so each arm's
folders are exactly what those commands write by hand.
"""
