"""Label quality from the store: ``eval`` against human labels and ``calibrate`` thresholds (``report`` beside).

>>> from autolabel.quality.gt import load_ground_truth          # doctest: +SKIP
>>> from autolabel.quality.data import pair                     # doctest: +SKIP
>>> from autolabel.quality.eval import evaluate                 # doctest: +SKIP
"""
