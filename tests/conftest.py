"""Puts tests/ on sys.path so every suite can import enginetest."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
