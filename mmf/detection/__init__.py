"""The intended-product detector: model (``model``), frames with boxes (``data``), the
training and detection loops (``engine``) and detection AP (``metrics``)."""
