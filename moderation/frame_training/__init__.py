"""Training, calibration and evaluation of the frame filter's default CLIP model.

No pretrained CLIP can be downloaded on the machines this project is built on, so the
default weights are a small open_clip model trained here on clips rendered by the
procedural generator, captioned with their prompts:

* :mod:`.data` builds prompts from the generator's vocabulary and renders them;
* :mod:`.train` trains the model (``python -m moderation.frame_training.train``);
* :mod:`.calibrate` sets the concept thresholds in ``moderation/data/frame_concepts.json``;
* :mod:`.crossval` compares scoring rules (concept files) on the calibration renders
  alone, by repeated halving, before one is chosen;
* :mod:`.evaluate` measures it on held-out renders it never trained on;
* :mod:`.step_cost` and :mod:`.sweep` (``gpu_sweep.sh``) compare configurations on a GPU
  at the step count 2 CPU cores reach in the training budget.
"""
