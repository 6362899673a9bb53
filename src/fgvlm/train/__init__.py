"""Training: one shared loop (``loop``) with checkpoints, resume, logging and DDP, plus what each method adds.

``loop.TrainLoop`` knows nothing about images or models: it runs steps of a loss function, evaluates, writes
checkpoints and logs. ``cnn`` builds a timm classifier, its data and its loss, and hands them to the loop.
Classification heads (``fgvlm.heads.training``) do not use it: they evaluate every N steps and their cached and
online modes must match step for step, so they run a small step loop of their own (sharing ``optim``'s schedule).
"""
