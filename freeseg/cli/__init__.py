"""Command line: ``freeseg <train|eval|demo|quickstart|prepare>`` and FreeSeg's ``train_net.py``.

``args.default_argument_parser()`` has detectron2's training flags; ``main.main(argv)`` is the
console script. Commands are imported only when run.
"""
