"""Name -> class tables, one per kind of component.

The registry holds classes only, never runtime state. A name registered twice raises; an
unknown name raises ``UnknownNameError`` listing the known names::

    from mmf.common.registry import registry

    @registry.register_model("rice")
    class RICE(BaseModel): ...

    registry.get_model_class("rice")
"""
import difflib

from mmf.common.errors import UnknownNameError

KINDS = (
    "builder",
    "model",
    "processor",
    "encoder",
    "metric",
    "optimizer",
    "scheduler",
    "callback",
    "trainer",
)


class Registry:
    def __init__(self):
        self._tables = {kind: {} for kind in KINDS}

    def _register(self, kind, name):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")

        def wrap(cls):
            table = self._tables[kind]
            old = table.get(name)
            if old is not None and _qualname(old) != _qualname(cls):
                raise ValueError(
                    f"{kind} name {name!r} is already registered to {_qualname(old)}; "
                    f"cannot register {_qualname(cls)} under the same name"
                )
            table[name] = cls
            return cls

        return wrap

    def get(self, kind, name):
        """Class registered as ``name`` for ``kind``; raises ``UnknownNameError`` if none."""
        table = self._tables[kind]
        if name in table:
            return table[name]
        known = sorted(table)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {known}")

    def list(self, kind):
        """Sorted names registered for ``kind``."""
        return sorted(self._tables[kind])

    def register_builder(self, name):
        return self._register("builder", name)

    def register_model(self, name):
        return self._register("model", name)

    def register_processor(self, name):
        return self._register("processor", name)

    def register_encoder(self, name):
        return self._register("encoder", name)

    def register_metric(self, name):
        return self._register("metric", name)

    def register_optimizer(self, name):
        return self._register("optimizer", name)

    def register_scheduler(self, name):
        return self._register("scheduler", name)

    def register_callback(self, name):
        return self._register("callback", name)

    def register_trainer(self, name):
        return self._register("trainer", name)

    def get_builder_class(self, name):
        return self.get("builder", name)

    def get_model_class(self, name):
        return self.get("model", name)

    def get_processor_class(self, name):
        return self.get("processor", name)

    def get_encoder_class(self, name):
        return self.get("encoder", name)

    def get_metric_class(self, name):
        return self.get("metric", name)

    def get_optimizer_class(self, name):
        return self.get("optimizer", name)

    def get_scheduler_class(self, name):
        return self.get("scheduler", name)

    def get_callback_class(self, name):
        return self.get("callback", name)

    def get_trainer_class(self, name):
        return self.get("trainer", name)


def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


registry = Registry()
