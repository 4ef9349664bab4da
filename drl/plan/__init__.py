"""The memory plan (``drl-train <overrides> --plan``): per-GPU peak memory of a run, before anything is loaded.

    architecture.py  the pipeline's networks at their real size on the meta device (local directory or shipped configs)
    inputs.py        one denoiser call's inputs per denoiser class
    tracing.py       peak memory of a call from a fake-tensor run (torch's FakeTensorMode + MemTracker)
    budget.py        the lines of the plan: weights, trainable + AdamW, gradients, activations, reference, encoders, reward
    rewards.py       the reward models' weights
    report.py        the text, the 24/48/80 GB verdicts and the options that make a run fit
    cli.py           the --plan entry point
"""
