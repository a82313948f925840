"""Text at evaluation: which texts a run reads (``--text``) and how well the test split's
texts cover it.

``text_sides(option, model)``: ``--text none|asr|title|both`` -> the sides to encode (default:
those the model was trained with); asking for a text the model does not read is a
``ConfigError``.

``coverage(data)``: the share of query clips with an ASR, of gallery images with a title and
of the queries' *ground-truth* gallery images with a title. Titles that cover the ground-truth
images at a different rate than the other gallery images can leak the answer (a clip's
product is the one with a title). The rule (``title_leak``): both groups hold at least
``LEAK_MIN_IMAGES`` images and their title rates differ by more than ``LEAK_POINTS``
percentage points. Then the evaluation warns and also reports the ``asr``-only result.
"""
from mmf.common.errors import ConfigError
from mmf.datasets.ids import normalize_id

TEXT_CHOICES = ("none", "asr", "title", "both")
SIDES = {"none": (), "asr": ("asr",), "title": ("title",), "both": ("asr", "title")}
LEAK_POINTS = 10.0
LEAK_MIN_IMAGES = 10


def text_sides(option, model):
    """The texts to feed ``model``: a tuple of ``asr`` / ``title``."""
    trained = tuple(getattr(model, "text_inputs", ()) or ())
    if option is None:
        return trained
    if option not in SIDES:
        raise ConfigError(f"--text must be one of {TEXT_CHOICES}, got {option!r}")
    extra = [side for side in SIDES[option] if side not in trained]
    if extra:
        raise ConfigError(
            f"--text {option}: the model does not read {extra} (it was trained with "
            f"{list(trained) or 'no text'})"
        )
    return SIDES[option]


def _has_text(mapping, key):
    return bool((mapping.get(key) or "").strip())


def coverage(data):
    """``{"queries_with_asr", "gallery_with_title", "ground_truth_with_title",
    "other_gallery_with_title"}`` (percentages) with the counts behind them, and
    ``title_leak`` (bool)."""
    queries, gallery = data.query_dataset, data.gallery_dataset
    asr, titles = getattr(queries, "asr", {}) or {}, getattr(gallery, "title", {}) or {}
    query_ids = [record.video_id for record in queries.records]
    image_ids = [record.image_id for record in gallery.records]
    truth = {normalize_id(i) for ids in data.ground_truth.values() for i in ids}
    truth_ids = [i for i in image_ids if i in truth]
    other_ids = [i for i in image_ids if i not in truth]

    def share(ids, mapping):
        hits = sum(_has_text(mapping, i) for i in ids)
        return {"count": len(ids), "with_text": hits,
                "percent": 100.0 * hits / len(ids) if ids else 0.0}

    report = {
        "queries_with_asr": share(query_ids, asr),
        "gallery_with_title": share(image_ids, titles),
        "ground_truth_with_title": share(truth_ids, titles),
        "other_gallery_with_title": share(other_ids, titles),
    }
    truth_share, other_share = report["ground_truth_with_title"], report["other_gallery_with_title"]
    report["title_leak"] = bool(
        min(truth_share["count"], other_share["count"]) >= LEAK_MIN_IMAGES
        and abs(truth_share["percent"] - other_share["percent"]) > LEAK_POINTS
    )
    return report


def coverage_lines(section):
    """Console lines of a report's ``text`` section."""
    if not section:
        return []
    cover = section["coverage"]
    parts = ", ".join(
        f"{name.replace('_', ' ')} {value['percent']:.1f} % ({value['with_text']}/{value['count']})"
        for name, value in cover.items() if isinstance(value, dict)
    )
    lines = [f"text: {', '.join(section['sides']) or 'none'}; coverage: {parts}"]
    if cover["title_leak"]:
        lines.append(
            "WARNING: titles cover the ground-truth images at another rate than the other "
            "gallery images: title results may leak the answer"
        )
        asr_only = section.get("asr_only")
        if asr_only:
            lines.append(
                f"asr-only result beside it: R@1 {asr_only['r@1']:.2f}, R@5 {asr_only['r@5']:.2f}, "
                f"R@10 {asr_only['r@10']:.2f}, mAP {asr_only['map']:.2f}"
            )
    return lines
