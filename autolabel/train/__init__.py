"""Fine-tuning Florence-2 on reviewed labels (``autolabel train``) and the refinement loop (``autolabel refine``).

Light on import: the model loader and the pipeline's hash read :mod:`.lineage` when a model is a trained folder.
The Python API is :func:`autolabel.train.api.train` and :func:`autolabel.train.api.refine`.
"""
