"""Budgeted auto-compression: a search over student plans for a stated latency/size budget and
accuracy criterion (:mod:`.search`), over a space of plans (:mod:`.space`), timed with random
weights on the target backend (:mod:`.latency`), trained as distill trials (:mod:`.trials`) and
recorded as a frontier (:mod:`.frontier`). It sits above the pipeline: a trial is the pipeline's
own distill stage, and the chosen plan is a pipeline YAML."""
