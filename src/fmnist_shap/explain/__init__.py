"""Attributions of the CNN: every method behind one interface, and the explain stage's job.

    base.py        Attributions, Context (what a method may use), Method (the interface:
                   `attribute(context, images, classes, test_index)`), draw_seed
    registry.py    every method once, with what it needs (a masker, background images,
                   TensorFlow); the explain stage, `global` and the PR report all go through it
    shap_image.py  shap's Partition and Permutation with an image masker
    maskers.py     shap adapters: the blur masker's rows built in the model call, row counting
    gradients.py   Integrated and Expected Gradients in JAX
    keras.py       shap's DeepExplainer and GradientExplainer on the Keras twin
    selection.py   which test images are explained, and which classes
    metrics.py     additivity
    outputs.py     values.npz, the tables, writing the stage's folders
    plots.py       shap's image plots
    job.py         the stage's inputs; worker.py: one worker process's work; runner.py: the pool

Randomness is keyed by what it is about: a draw for test image 417 uses (explain.seed, 417,
method), so an image gets the same map in any batch, stage or worker (`base.draw_seed`).
"""
