"""What the compiler did, for people: FUSEGRAD_LOGS=recompiles,guards,fusion,graph,fallbacks.

Each category is off unless named in the variable ("all" names every one). Messages go to the
`fusegrad` logger, which prints to stderr when the application has not configured logging. The
explain API (`fusegrad.explain`) collects the same messages for one call instead."""
import logging
import os

CATEGORIES = ("recompiles", "guards", "fusion", "graph", "fallbacks", "cache")
logger = logging.getLogger("fusegrad")
_listeners = []   # callables (category, message): explain() records through these


def _enabled_from_env():
    names = {n.strip() for n in os.environ.get("FUSEGRAD_LOGS", "").split(",") if n.strip()}
    if "all" in names:
        return set(CATEGORIES)
    unknown = names - set(CATEGORIES)
    if unknown:
        raise ValueError(f"FUSEGRAD_LOGS: unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    return names


enabled = _enabled_from_env()
if enabled and not logger.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[fusegrad %(category)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def active(category):
    return category in enabled or bool(_listeners)


def log(category, message):
    """Report `message` (a string, or a callable making one, so that the text costs nothing
    while nobody listens) under `category`."""
    if category not in enabled and not _listeners:
        return
    text = message() if callable(message) else message
    if category in enabled:
        logger.info(text, extra={"category": category})
    for listener in list(_listeners):
        listener(category, text)
