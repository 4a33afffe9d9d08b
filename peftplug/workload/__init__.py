"""The task, model, data and budget behind ``peftplug train`` and each comparison row.

``options`` holds the ``Workload``; ``prepared_data`` and ``data_files`` read and clean the data;
``model_dirs`` checks a user's model directory; ``tasks`` loads the model and the split and
evaluates with ``intervals``; ``training`` runs the stock Trainer under ``measure``.
"""
