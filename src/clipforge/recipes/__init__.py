"""Recipes: complete runs built from the library; nothing in the library imports them.

`demo.py`: the CIFAR-10 template demo. `experiments/`: small-scale reproductions of the paper's findings
(importing `clipforge.recipes.experiments.objectives` registers its objectives with the trainer).
`language.py`: CLIP on Flickr8k's human captions with three tower set-ups (from scratch, LiT, both towers
pretrained), evaluated zero-shot on label sets never seen in training (`unseen.py`); `caption_demo.py` is
`clipforge demo`. They use the library like any user would; `clipforge demo` / `experiment` call into them.
"""
