"""Publishing to the Hugging Face Hub: trained runs as model repositories, instruction data as dataset repositories.

``fgvlm publish SOURCE --repo-id ORG/NAME`` stages the exact folder to upload (``OUT/upload/``: weights, processor,
training config and log, the training-curve PNG and a ``README.md`` card whose ``model-index`` carries the run's
numbers), then sends it as ONE commit through ``huggingface_hub`` (``create_repo`` + ``upload_folder``); ``--dry-run``
stops after staging. What can be published is a table of source classes (``sources.SOURCES``), each finding its
kind of input by its files: a fine-tuned VLM run (``RUN/model``), a head run, a CNN run, or ``fgvlm prompts build``
output.

Modules: ``config`` (the options, no torch), ``sources`` (the table and the shared run reading), ``finetuned`` /
``adapter`` / ``head`` / ``cnn`` / ``instructions`` (one source kind each), ``card`` and ``dataset_card`` (the
README cards), ``staging`` (the folder), ``upload`` (the Hub boundary), ``run`` (the run lifecycle).
"""
