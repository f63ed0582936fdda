"""Recipes: complete training runs built from the library (nothing in the library imports them).

`language`: CLIP on Flickr8k's human captions with three tower set-ups (from scratch, LiT, both towers
pretrained), evaluated zero-shot on label sets never seen in training (`unseen`).
"""
