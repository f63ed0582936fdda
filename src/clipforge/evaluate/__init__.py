"""The paper's evaluation suite: zero-shot, retrieval, linear probe, few-shot, distribution shift."""
