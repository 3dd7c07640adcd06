"""What each DVC stage does, one module per stage: `run(params, paths)`.

A stage script only parses its arguments, loads params.yaml (`config.load_params`) and
calls its module's `run`. This file imports nothing, so a stage's import closure (and so
its dvc.yaml deps) holds only its own module here: editing the evaluate step reruns
evaluate, not export.
"""
