"""The hostile-input suite (issue 11): each case is a test; the shared fixtures live one level up."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/_data_fixtures.py and friends are imported by name, as the tests one level up do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
