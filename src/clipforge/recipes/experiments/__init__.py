"""Small-scale reproductions of the paper's comparative findings (docs/experiments.md).

objectives.py: bag-of-words, captioning and supervised objectives beside the trainer's contrastive one, each with
a zero-shot (or label) scorer; shifts.py: deterministic distribution-shift transforms; runs.py: one cached training
run per objective; objectives_exp.py, prompts_exp.py, robustness_exp.py: the three experiments.
"""
