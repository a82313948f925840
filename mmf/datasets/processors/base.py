"""``BaseProcessor``: a callable transform built from ``{type, params}``.

A processor class is registered with ``@registry.register_processor(name)`` and constructed
as ``cls(params, **extra)`` where ``params`` is the ``params`` node of its config (an empty
DictConfig when absent) and ``extra`` holds builder-provided context such as ``data_dir``.
"""


class BaseProcessor:
    def __init__(self, config=None, *args, **kwargs):
        self.config = config

    def __call__(self, item, *args, **kwargs):
        return item
