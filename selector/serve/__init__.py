"""`tokenrelay serve`: the relay as an OpenAI-compatible HTTP service (FastAPI + uvicorn).

Needs the ``serve`` extra: ``pip install "tokenrelay[serve]"``. See docs/serving.md.
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
