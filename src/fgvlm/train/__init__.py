"""Training: one shared loop (``loop``) with checkpoints, resume, logging and DDP, plus what each method adds.

``loop.TrainLoop`` knows nothing about images or models: it runs steps of a loss function, evaluates, writes
checkpoints and logs. ``cnn`` builds a timm classifier, its data and its loss, and hands them to the loop; heads
and SFT can do the same.
"""
